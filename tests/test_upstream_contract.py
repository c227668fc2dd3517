"""Registry-wide Upstream contract: every tiny or parameter-free upstream runs forward/backward on a padded
batch, returns one hidden state per `hidden_sizes` entry, lengths that follow `stride`, and equals the
utterances run one by one. Full-size configurations are only built (on the meta device) to count parameters.
Parameters that only a pre-training objective uses (a mask embedding, say) are exempt from the gradient check
when the upstream lists their name prefixes in `pretraining_only_parameters`."""
from __future__ import annotations

import pytest
import torch

from speechrep.upstream.registry import get_constructor, list_upstreams

SAMPLE_LENS = (16000, 11371, 6001)  # 1 s, an odd length, a short one


def _is_fast(name: str) -> bool:
    """Tiny test configurations and the parameter-free feature baselines."""
    return "_tiny" in name or get_constructor(name).__module__ == "speechrep.upstream.baselines"


FAST = [n for n in list_upstreams() if _is_fast(n)]
FULL = [n for n in list_upstreams() if not _is_fast(n)]

# Published parameter counts of the upstream (pre-training heads excluded where noted), relative tolerance 2%.
# SUPERB (Yang et al. 2021) table: APC 4.11M and VQ-APC 4.63M include the 41k postnet, NPC 19.38M too.
PUBLISHED_PARAMS = {
    "apc": 4.11e6 - 41_040,
    "vq_apc": 4.63e6 - 41_040,
    "npc": 19.38e6 - 41_040,
    "mockingjay": 85.12e6,
    "tera_base": 21.33e6,
    "audio_albert": 7.12e6,
    "cpc": 1.84e6,
    "wav2vec2_base": 95.04e6,
    "wav2vec2_large": 317.38e6,
    "hubert_base": 94.68e6,
    "hubert_large": 316.61e6,
    "wavlm_base": 94.70e6,
    "wavlm_base_plus": 94.70e6,
    "wavlm_large": 316.62e6,
    "data2vec_base": 93.75e6,
    "distilhubert": 23.49e6,
    # SUPERB's wav2vec 32.54M / vq-wav2vec 34.15M include the 12-step prediction map (512·512·12 + 512)
    "wav2vec_large": 32.54e6 - 3_146_240,
    "vq_wav2vec": 34.15e6 - 3_146_240,
}


# Padded batch vs one by one: 1e-5, except where float32 rounding (not padding) is amplified: MFCC's ΔΔ
# columns have a tiny variance, so CMVN scales the ~5e-7 batch-size-dependent rounding of the deltas ×100.
TOLERANCE = {"mfcc": 1e-4}


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of noise-plus-tone waveforms with distinct lengths."""
    gen = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(SAMPLE_LENS), max(SAMPLE_LENS))
    t = torch.arange(max(SAMPLE_LENS)) / 16000
    for i, n in enumerate(SAMPLE_LENS):
        tone = 0.3 * torch.sin(2 * torch.pi * (180 + 70 * i) * t[:n])
        wavs[i, :n] = tone + 0.05 * torch.randn(n, generator=gen)
    # padding filled with loud garbage: it must not leak into the real frames
    wavs[1, SAMPLE_LENS[1]:] = 0.9
    wavs[2, SAMPLE_LENS[2]:] = -0.7
    return wavs, torch.tensor(SAMPLE_LENS)


@pytest.mark.parametrize("name", FAST)
def test_upstream_contract(name: str) -> None:
    torch.manual_seed(0)
    model = get_constructor(name)()
    wavs, lens = _batch()

    assert model.sample_rate == 16000
    model.train()
    out = model(wavs, lens)
    assert len(out.hidden_states) == len(model.hidden_sizes)
    frames = out.hidden_states[0].shape[1]
    for h, size in zip(out.hidden_states, model.hidden_sizes):
        assert h.shape == (len(SAMPLE_LENS), frames, size)
        assert torch.isfinite(h).all()
    assert out.lengths.tolist() == sorted(out.lengths.tolist(), reverse=True)
    assert int(out.lengths.max()) == frames
    # frames ≈ samples / stride: within the analysis window (≤ 400 samples) plus one frame of rounding
    expected = lens // model.stride
    assert ((out.lengths - expected).abs() <= 400 // model.stride + 1).all(), (out.lengths, expected)

    params = [p for p in model.parameters() if p.requires_grad]
    if params:
        sum(h.pow(2).mean() for h in out.hidden_states).backward()
        # an upstream may name parameters only its pre-training objective uses (e.g. a mask embedding)
        exempt = tuple(getattr(model, "pretraining_only_parameters", ()))
        missing = [n for n, p in model.named_parameters()
                   if p.requires_grad and p.grad is None and not (exempt and n.startswith(exempt))]
        assert not missing, f"no gradient for {missing}"
        assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)

    model.eval()
    with torch.no_grad():
        batched = model(wavs, lens)
        for i, n in enumerate(SAMPLE_LENS):
            alone = model(wavs[i: i + 1, :n], lens[i: i + 1])
            valid = int(alone.lengths[0])
            assert valid == int(batched.lengths[i])
            assert alone.hidden_states[0].shape[1] == valid
            for layer, (a, b) in enumerate(zip(alone.hidden_states, batched.hidden_states)):
                tol = TOLERANCE.get(name, 1e-5)
                torch.testing.assert_close(b[i, :valid], a[0], atol=tol, rtol=tol,
                                           msg=lambda m: f"{name} layer {layer} utterance {i}: {m}")


def test_full_size_parameter_counts() -> None:
    counts = {}
    for name in FULL:
        with torch.device("meta"):
            model = get_constructor(name)()
        counts[name] = sum(p.numel() for p in model.parameters())
    off = {n: (counts[n], PUBLISHED_PARAMS[n]) for n in counts if n in PUBLISHED_PARAMS
           and abs(counts[n] - PUBLISHED_PARAMS[n]) > 0.02 * PUBLISHED_PARAMS[n]}
    assert not off, f"parameter counts (ours, published) off by more than 2%: {off}"


GEOMETRY_LENS = (1601, 2317, 3200, 4481, 6001)
# frame-local variants of families whose registered configurations use utterance-wide statistics
LOCAL_VARIANTS = [("hubert_tiny", {"conv_norm": "layer"}), ("apc_tiny", {"corpus_norm": True}),
                  ("mockingjay_tiny", {"corpus_norm": True})]


def _front_end(model: torch.nn.Module, wavs: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """The features before any context network: conv/projection, log-mel input, CPC's encoder, or layer 0."""
    for method in ("extract_features", "input_features", "encode"):
        if hasattr(model, method):
            return getattr(model, method)(wavs, lens)[0]
    return model(wavs, lens).hidden_states[0]


@pytest.mark.parametrize("name", FAST)
def test_declared_frame_geometry_counts_frames(name: str) -> None:
    model = get_constructor(name)().eval()
    geometry = model.frame_geometry
    assert geometry.stride == model.stride
    with torch.no_grad():
        for n in GEOMETRY_LENS:
            out = model(torch.randn(1, n), torch.tensor([n]))
            assert int(out.lengths[0]) == geometry.num_frames(n), (n, geometry)


@pytest.mark.parametrize("name, overrides", [(n, {}) for n in FAST] + LOCAL_VARIANTS)
def test_frames_depend_only_on_their_declared_receptive_field(name: str, overrides: dict) -> None:
    torch.manual_seed(0)
    model = get_constructor(name)(**overrides).eval()
    geometry = model.frame_geometry
    if not geometry.frame_local:
        pytest.skip(f"{name}: front end uses utterance-wide statistics (declared frame_local=False)")
    n = 6001
    gen = torch.Generator().manual_seed(1)
    wav = 0.3 * torch.randn(1, n, generator=gen)
    lens = torch.tensor([n])
    with torch.no_grad():
        base = _front_end(model, wav, lens)
        frames = base.shape[1]
        for j in (0, frames // 2, frames - 1):
            start = j * geometry.stride - geometry.offset
            inside = torch.zeros(n, dtype=torch.bool)
            inside[max(start, 0): max(start + geometry.receptive_field, 0)] = True
            outside = wav.clone()
            outside[0, ~inside] = 0.3 * torch.randn(int((~inside).sum()), generator=gen)
            changed = _front_end(model, outside, lens)
            torch.testing.assert_close(changed[0, j], base[0, j], atol=1e-5, rtol=1e-5)
            within = wav.clone()
            within[0, inside] = 0.3 * torch.randn(int(inside.sum()), generator=gen)
            assert not torch.allclose(_front_end(model, within, lens)[0, j], base[0, j]), (name, j)
