"""Log-mel standardised with corpus statistics (`corpus_norm`): computed from the training audio, kept as buffers
through export, applied instead of per-utterance CMVN (APC and TERA; MelHuBERT and BEST-RQ always use them)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pretrain_corpus import unlabeled_corpus

from speechrep.audio.features import fbank
from speechrep.pretrain import method_config, run_method
from speechrep.pretrain.common import fbank_statistics, load_unlabeled
from speechrep.upstream import load_upstream

SMALL = {"tera": ["model.hidden_size=32", "model.ffn_size=64"], "apc": ["model.hidden_size=32"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.mark.parametrize("method", ["tera", "apc"])
def test_corpus_norm_statistics_survive_export_and_replace_utterance_cmvn(method: str, corpus: Path,
                                                                         tmp_path: Path) -> None:
    torch.set_num_threads(1)
    overrides = [*SMALL[method], "model.corpus_norm=true", "train.max_steps=2", "train.eval_every=2"]
    cfg = method_config(method, "tiny", overrides)
    upstream = load_upstream(run_method(method, corpus, tmp_path / "run", "tiny", overrides))
    mean, std = fbank_statistics(load_unlabeled(corpus, cfg.data)[0], 80, "povey", cfg.stats_seconds)
    assert torch.allclose(upstream.feature_mean, mean) and torch.allclose(upstream.feature_std, std)
    wavs, lens = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    feats, lengths = upstream.input_features(wavs, lens)
    mels, _ = fbank(wavs, lens, num_mel_bins=80)
    assert torch.allclose(feats[1, : lengths[1]], ((mels - mean) / std)[1, : lengths[1]], atol=1e-5)
    assert feats[1, lengths[1]:].abs().sum() == 0  # padding stays zero
    # the utterance mean survives (per-utterance CMVN would zero it): the speaker's spectral envelope is kept
    assert feats[0, : lengths[0]].mean(0).abs().max() > 0.1


@pytest.mark.parametrize("name", ["tera_tiny", "apc_tiny"])
def test_an_encoder_with_utterance_cmvn_has_no_statistics_to_set(name: str) -> None:
    with pytest.raises(ValueError, match="corpus_norm"):
        load_upstream(name).set_feature_stats(torch.zeros(80), torch.ones(80))
