"""VQ-APC pre-training: codebook monitor, APC loss through the VQ bottleneck, training run and export."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from pretrain_corpus import first_batch, loss_before_and_after, unlabeled_corpus

from speechrep.data.batching import AudioBatch
from speechrep.errors import ConfigError
from speechrep.nn.quantizers import QuantizerOutput
from speechrep.pretrain import run_method
from speechrep.pretrain.apc import APCObjective, CodebookMonitor
from speechrep.train import read_metrics
from speechrep.upstream import load_upstream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


def _vq_output(perplexity: float) -> QuantizerOutput:
    codes = torch.zeros(1, 1, 2, dtype=torch.long)
    return QuantizerOutput(torch.zeros(1, 1, 4), codes, torch.tensor(perplexity), torch.tensor(0.0))


def test_codebook_monitor_scalars_and_one_warning_per_collapse(caplog: pytest.LogCaptureFixture) -> None:
    monitor = CodebookMonitor(groups=2, entries=8, collapse_below=2.0)
    with caplog.at_level(logging.WARNING, logger="speechrep.pretrain.apc"):
        assert monitor(_vq_output(8.0)) == {"code_perplexity": 8.0, "code_usage": 0.5}
        assert not caplog.records
        monitor(_vq_output(3.0))  # 1.5 codes per group: collapsed
        monitor(_vq_output(2.5))  # still collapsed: no second warning
        monitor(_vq_output(6.0))  # 3 per group: above the threshold but not recovered (needs 4)
        monitor(_vq_output(3.5))
        assert len(caplog.records) == 1 and "collapse" in caplog.records[0].getMessage()
        monitor(_vq_output(10.0))  # recovered
        monitor(_vq_output(2.0))
        assert len(caplog.records) == 2


def test_vq_apc_loss_is_l1_n_ahead_from_the_quantized_layer() -> None:
    torch.manual_seed(0)
    objective = APCObjective(load_upstream("vq_apc_tiny", dropout=0.0, n_future=2)).eval()
    wavs, lens = torch.randn(2, 6400) * 0.1, torch.tensor([6400, 4800])
    feats, lengths = objective.upstream.input_features(wavs, lens)
    out, vq = objective.upstream.encode(feats, lengths)
    pred = objective.head.postnet(out.hidden_states[-1])
    # valid (t, t + 2) pairs of each utterance, averaged over frames and channels
    errors = [(pred[b, : n - 2] - feats[b, 2:n]).abs() for b, n in enumerate(lengths.tolist())]
    expected = torch.cat(errors).mean()
    loss, scalars = objective(AudioBatch(wavs, lens, cuts=None))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.equal(out.hidden_states[-1][0, : lengths[0]], vq.quantized[0, : lengths[0]])
    assert scalars["code_perplexity"] == pytest.approx(float(vq.perplexity.detach()))
    assert 1.0 <= scalars["code_perplexity"] <= 16.0  # two groups of 8 codes


def test_vq_apc_overfits_one_batch(corpus: Path) -> None:
    torch.set_num_threads(1)
    objective = APCObjective(load_upstream("vq_apc_tiny", dropout=0.0))
    before, after = loss_before_and_after(objective, first_batch(corpus), steps=40)
    assert after < 0.88 * before  # the same masks/codes before and after 40 steps on the batch


def test_vq_apc_trains_exports_and_logs_perplexity(corpus: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = run_method("vq_apc", corpus, tmp_path / "run", "tiny",
                     ["model.hidden_size=32", "train.max_steps=4", "train.eval_every=4", "train.log_every=1"])
    upstream = load_upstream(out)
    assert upstream.stride == 160 and len(upstream.hidden_sizes) == 3  # 2 GRU layers + the quantized one
    hidden = upstream(torch.randn(1, 8000), torch.tensor([8000]))
    assert hidden.lengths.tolist() == [48] and hidden.hidden_states[-1].shape == (1, 48, 32)
    logged = read_metrics(tmp_path / "run", "train")
    assert len(logged) == 4 and all(0 < m["code_usage"] <= 1 for m in logged)


def test_vq_apc_needs_a_vq_layer(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no VQ layer"):
        run_method("vq_apc", corpus, tmp_path / "run", "tiny", ["model.vq_codebook_size=0"])
