"""wav2vec (2019) and vq-wav2vec: hub shapes and frame geometry, the contrastive loss against a per-step
transcription of the paper, tiny-preset training on the micro corpus with export and re-load, and the fairseq
`wav2vec` / `vq-wav2vec` checkpoint converter on checkpoints written in fairseq's key layout."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pretrain_corpus import unlabeled_corpus

from speechrep.errors import CheckpointError
from speechrep.pretrain import run_method
from speechrep.pretrain.wav2vec import sample_negatives, wav2vec_loss
from speechrep.train import read_metrics
from speechrep.upstream import load_upstream
from speechrep.upstream.base import padding_mask

TINY = ["wav2vec_tiny", "vq_wav2vec_tiny", "vq_wav2vec_kmeans_tiny"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", TINY)
def test_shapes_geometry_and_padding(name: str) -> None:
    torch.manual_seed(0)
    model = load_upstream(name).eval()
    lens = torch.tensor([16000, 11371, 6001])
    wavs = torch.randn(3, 16000) * 0.1
    wavs[1, 11371:], wavs[2, 6001:] = 0.9, -0.7
    out = model(wavs, lens)
    assert model.stride == 160 and model.frame_geometry.receptive_field == 465
    assert not model.frame_geometry.frame_local  # group norm over time
    assert out.lengths.tolist() == [model.frame_geometry.num_frames(int(n)) for n in lens] == [98, 69, 35]
    assert [h.shape[-1] for h in out.hidden_states] == model.hidden_sizes == [32, 32, 32, 48]
    for i, n in enumerate(lens.tolist()):
        alone = model(wavs[i:i + 1, :n], lens[i:i + 1])
        for a, b in zip(out.hidden_states, alone.hidden_states):
            torch.testing.assert_close(a[i:i + 1, : b.shape[1]], b, atol=1e-5, rtol=1e-5)


def test_full_size_configurations() -> None:
    with torch.device("meta"):
        sizes = {n: sum(p.numel() for p in load_upstream(n).parameters()) for n in
                 ("wav2vec", "wav2vec_large", "vq_wav2vec", "vq_wav2vec_kmeans")}
        large = load_upstream("wav2vec_large")
    # SUPERB's 32.54M for wav2vec (large) includes the 12-step prediction map (512·512·12 + 512)
    assert sizes["wav2vec_large"] + 512 * 512 * 12 + 512 == pytest.approx(32.54e6, rel=2e-3)
    assert len(large.hidden_sizes) == 13 and large.stride == 160
    assert sizes["vq_wav2vec"] > sizes["vq_wav2vec_kmeans"] > sizes["wav2vec_large"] > sizes["wav2vec"]


def test_negatives_are_other_valid_frames_of_the_same_utterance() -> None:
    torch.manual_seed(0)
    lengths = torch.tensor([9, 4])
    idx = sample_negatives(lengths, 9, 400)
    t = torch.arange(9)[None, :, None]
    assert (idx < lengths[:, None, None]).all()
    assert (idx[:, :, :] != t)[padding_mask(lengths, 9)].all()  # never the target frame itself
    assert set(idx[1, 0].tolist()) == {1, 2, 3}


def test_loss_matches_a_per_step_computation() -> None:
    torch.manual_seed(1)
    B, T, K, N, C, first = 2, 8, 3, 4, 5, 2
    predictions, targets = torch.randn(B, T, K, C), torch.randn(B, T, C)
    lengths = torch.tensor([8, 6])
    negatives = sample_negatives(lengths, T, N)
    loss, accuracy = wav2vec_loss(predictions, targets, negatives, lengths, first)
    terms, hits = [], []
    for b in range(B):
        for s in range(K):
            k = first + s
            for t in range(int(lengths[b]) - k):
                h = predictions[b, t, s]
                pos = h @ targets[b, t + k]
                negs = torch.stack([h @ targets[b, int(negatives[b, t + k, n])] for n in range(N)])
                # the paper: −log σ(zᵀh) − Σ_n log σ(−z̃ᵀh)
                terms.append(-F.logsigmoid(pos) - F.logsigmoid(-negs).sum())
                hits.append(float(bool((pos > negs).all())))
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    assert accuracy.item() == pytest.approx(sum(hits) / len(hits))
    # scores all zero: each pair costs (1 + N) log 2
    zero, _ = wav2vec_loss(torch.zeros(B, T, K, C), targets, negatives, lengths, first)
    assert zero.item() == pytest.approx((1 + N) * math.log(2), rel=1e-6)
    # balanced classes (fairseq's option): each distractor's term weighs 1/N
    balanced, _ = wav2vec_loss(predictions, targets, negatives, lengths, first, balanced_classes=True)
    by_hand = []
    for b in range(B):
        for s in range(K):
            k = first + s
            for t in range(int(lengths[b]) - k):
                h = predictions[b, t, s]
                negs = torch.stack([h @ targets[b, int(negatives[b, t + k, n])] for n in range(N)])
                by_hand.append(-F.logsigmoid(h @ targets[b, t + k]) - F.logsigmoid(-negs).sum() / N)
    torch.testing.assert_close(balanced, torch.stack(by_hand).mean())
    zero, _ = wav2vec_loss(torch.zeros(B, T, K, C), targets, negatives, lengths, first, balanced_classes=True)
    assert zero.item() == pytest.approx(2 * math.log(2), rel=1e-6)


@pytest.mark.parametrize("method, extra", [("wav2vec", []), ("vq_wav2vec", []),
                                           ("vq_wav2vec", ["upstream=vq_wav2vec_kmeans_tiny",
                                                           "quantizer_weight=1.0"])])
def test_tiny_preset_trains_exports_and_loads(corpus: Path, tmp_path: Path, method: str, extra: list) -> None:
    args = ["train.max_steps=30", "train.log_every=5", "train.eval_every=30", *extra]
    export = run_method(method, corpus, tmp_path / "run", "tiny", args)
    logs = read_metrics(tmp_path / "run", "train")
    losses = [m["loss"] for m in logs]
    # the Gumbel quantizer starts near uniform (random codes, nothing to predict): its loss moves slowly
    assert losses[-1] < losses[0] - (0.01 if method == "vq_wav2vec" and not extra else 0.1), losses
    if method == "wav2vec":  # the true future frame wins more often than chance, 1/11 (no collapse)
        assert max(m["accuracy"] for m in logs[-2:]) > 0.13, [m["accuracy"] for m in logs]
    if method == "vq_wav2vec":
        assert all(0 < m["code_perplexity"] <= 32 for m in logs)  # 2 groups × 16 entries
    upstream = load_upstream(export).eval()
    assert upstream.config.vq_type == ("none" if method == "wav2vec" else
                                       "kmeans" if extra else "gumbel")
    out = upstream(torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6400]))
    assert [h.shape for h in out.hidden_states] == [(2, 48, 32)] * 3 + [(2, 48, 48)]
    assert out.lengths.tolist() == [48, 38]


# --- the fairseq converter: checkpoints written in fairseq's `wav2vec` key layout ---

def _fairseq_checkpoint(model: torch.nn.Module, steps: int = 12) -> dict:
    """Our weights renamed to fairseq's wav2vec keys, with an args dict as fairseq's Namespace would carry."""
    c = model.config
    inverse = [(r"^encoder\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
               (r"^encoder\.(\d+)\.norm\.", r"feature_extractor.conv_layers.\1.2."),
               (r"^aggregator\.(\d+)\.conv\.", r"feature_aggregator.conv_layers.\1.1."),
               (r"^aggregator\.(\d+)\.norm\.", r"feature_aggregator.conv_layers.\1.3."),
               (r"^residual_proj\.(\d+)\.", r"feature_aggregator.residual_proj.\1."),
               (r"^quantizer\.weight_proj\.", r"vector_quantizer.weight_proj."),
               (r"^quantizer_projection\.", r"vector_quantizer.projection.0."),
               (r"^quantizer_norm\.", r"vector_quantizer.projection.1.")]
    state = {}
    for key, value in model.state_dict().items():
        if key == "quantizer.codebook":
            if c.vq_type == "gumbel":  # (G', V, d) → (1, G'·V, d)
                state["vector_quantizer.vars"] = value.reshape(1, -1, value.shape[-1]).clone()
            else:  # (V, G'·d) → (V, G', d)
                groups = 1 if c.vq_combine_groups else c.vq_groups
                state["vector_quantizer.embedding"] = value.reshape(value.shape[0], groups, -1).clone()
            continue
        for pattern, target in inverse:
            key = re.sub(pattern, target, key)
        state[key] = value.clone()
    dim = c.conv_layers[-1][0]
    heads = torch.randn(c.aggregator_layers[-1][0], dim, 1, steps)
    state["wav2vec_predictions.project_to_steps.weight"] = heads
    state["wav2vec_predictions.project_to_steps.bias"] = torch.zeros(dim)
    args = {"arch": "wav2vec", "conv_feature_layers": str([tuple(x) for x in c.conv_layers]),
            "conv_aggregator_layers": str([tuple(x) for x in c.aggregator_layers]),
            "skip_connections_agg": c.skip_connections, "residual_scale": c.residual_scale,
            "log_compression": c.log_compression, "activation": c.activation, "vq_type": c.vq_type,
            "vq_groups": c.vq_groups, "vq_vars": c.vq_vars, "vq_depth": c.vq_depth,
            "combine_groups": c.vq_combine_groups, "vq_dim": 0, "vq_gamma": c.vq_gamma,
            "vq_temp": (2.0, 0.5, 0.999995), "prediction_steps": steps, "offset": "auto"}
    return {"args": args, "model": state}


@pytest.mark.parametrize("name", TINY)
def test_fairseq_checkpoint_loads_with_equal_hidden_states(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    ours = load_upstream(name).eval()
    path = tmp_path / "wav2vec.pt"
    torch.save(_fairseq_checkpoint(ours), path)
    loaded = load_upstream(path).eval()
    assert loaded.config == ours.config and loaded.provenance["family"] == "wav2vec"
    wavs, lens = torch.randn(2, 9000) * 0.1, torch.tensor([9000, 7000])
    for a, b in zip(ours(wavs, lens).hidden_states, loaded(wavs, lens).hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # the weights alone load into a registered name as well
    again = load_upstream(name, checkpoint=path).eval()
    torch.testing.assert_close(again(wavs, lens).hidden_states[-1], ours(wavs, lens).hidden_states[-1])


def test_fairseq_checkpoint_misfit_is_reported_by_name(tmp_path: Path) -> None:
    checkpoint = _fairseq_checkpoint(load_upstream("vq_wav2vec_tiny"))
    del checkpoint["model"]["feature_aggregator.conv_layers.1.3.weight"]
    checkpoint["model"]["vector_quantizer.extra_thing"] = torch.zeros(3)
    path = tmp_path / "broken.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as info:
        load_upstream(path)
    message = str(info.value)
    assert "missing: aggregator.1.norm.weight" in message and "vector_quantizer.extra_thing" in message
