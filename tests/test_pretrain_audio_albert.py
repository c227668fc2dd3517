"""Audio ALBERT pre-training: Mockingjay's objective on one layer shared by all, run and export."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pretrain_corpus import first_batch, loss_before_and_after, unlabeled_corpus

from speechrep.errors import ConfigError
from speechrep.pretrain import method_config, run_method
from speechrep.pretrain.mockingjay import MaskedReconstruction
from speechrep.upstream import load_upstream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


def test_audio_albert_overfits_one_batch_with_one_shared_layer(corpus: Path) -> None:
    torch.set_num_threads(1)
    upstream = load_upstream("audio_albert_tiny", dropout=0.0)
    objective = MaskedReconstruction(upstream, method_config("audio_albert").alteration)
    before, after = loss_before_and_after(objective, first_batch(corpus), steps=40)
    assert after < 0.9 * before
    # the encoder holds one layer, applied at every depth
    assert len(upstream.layers) == 1 and len(upstream.hidden_sizes) == upstream.config.num_layers + 1


def test_audio_albert_trains_and_exports(corpus: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = run_method("audio_albert", corpus, tmp_path / "run", "tiny",
                     ["model.hidden_size=32", "model.ffn_size=64", "train.max_steps=3", "train.eval_every=3"])
    upstream = load_upstream(out)
    assert upstream.stride == 160 and len(upstream.hidden_sizes) == 4  # embedding + one layer applied 3 times
    assert not any(name.startswith("layers.1.") for name in upstream.state_dict())
    hidden = upstream(torch.randn(1, 8000), torch.tensor([8000]))
    assert hidden.lengths.tolist() == [48] and hidden.hidden_states[-1].shape == (1, 48, 32)


def test_audio_albert_needs_shared_layers(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not share its layers"):
        run_method("audio_albert", corpus, tmp_path / "run", "tiny", ["model.share_layers=false"])
