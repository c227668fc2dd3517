"""TERA pre-training: time + frequency + magnitude alteration, L1 on the altered positions, run and export."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pretrain_corpus import first_batch, loss_before_and_after, unlabeled_corpus

from speechrep.data.batching import AudioBatch
from speechrep.pretrain import method_config, run_method
from speechrep.pretrain.mockingjay import MaskedReconstruction, alter_features
from speechrep.upstream import load_upstream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


def test_tera_defaults_alter_time_frequency_and_magnitude() -> None:
    a = method_config("tera").alteration
    assert (a.time_prob, a.time_span, a.freq_fraction, a.noise_std) == (0.15, 7, 0.2, 0.2)
    assert a.noise_prob > 0


def test_tera_loss_is_l1_on_time_and_frequency_targets() -> None:
    torch.manual_seed(0)
    cfg = method_config("tera")
    objective = MaskedReconstruction(load_upstream("tera_tiny", dropout=0.0), cfg.alteration).eval()
    wavs, lens = torch.randn(3, 16000) * 0.1, torch.tensor([16000, 12000, 9000])
    torch.manual_seed(5)
    loss, scalars = objective(AudioBatch(wavs, lens, cuts=None))
    torch.manual_seed(5)  # replay the same alteration by hand
    feats, lengths = objective.upstream.input_features(wavs, lens)
    altered, targets = alter_features(feats, lengths, cfg.alteration)
    pred = objective.head(objective.upstream.forward_features(altered, lengths).hidden_states[-1])
    assert torch.allclose(loss, (pred - feats).abs()[targets].mean(), atol=1e-6)
    frames = targets.all(-1).sum() / lengths.sum()
    assert scalars["altered_share"] > float(frames)  # frequency bands add targets beyond the time spans


def test_tera_overfits_one_batch(corpus: Path) -> None:
    torch.set_num_threads(1)
    alteration = method_config("tera").alteration
    objective = MaskedReconstruction(load_upstream("tera_tiny", dropout=0.0), alteration)
    before, after = loss_before_and_after(objective, first_batch(corpus), steps=40)
    assert after < 0.9 * before  # the same alterations before and after 40 steps on the batch


def test_tera_trains_and_exports(corpus: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = run_method("tera", corpus, tmp_path / "run", "tiny",
                     ["model.hidden_size=32", "model.ffn_size=64", "train.max_steps=3", "train.eval_every=3"])
    upstream = load_upstream(out)
    assert upstream.stride == 160 and len(upstream.hidden_sizes) == 3  # embedding + 2 layers
    hidden = upstream(torch.randn(1, 8000), torch.tensor([8000]))
    assert hidden.lengths.tolist() == [48] and hidden.hidden_states[-1].shape == (1, 48, 32)
