"""Prefix tuning and prompt tuning (`prefix`, `prompt`, `prompt:deep=true`): reference computations, training,
checkpoints, padding, the frame grid, WavLM's positions, parameter counts on hubert_base, options."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from speechrep.downstream.features import DownstreamModel, FeatureBatch, FeatureEncoder
from speechrep.errors import ConfigError
from speechrep.nn.frames import padding_mask
from speechrep.nn.transformer import TransformerLayer
from speechrep.tuning import get_tuning
from speechrep.tuning.prompts import PrefixAttention
from speechrep.upstream import load_upstream
from speechrep.upstream.mockingjay import Mockingjay

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STRATEGIES = ["prefix", "prompt", "prompt:deep=true"]
UPSTREAMS = ["hubert_tiny", "melhubert_tiny", "wavlm_tiny", "tera_tiny", "audio_albert_tiny"]
TOL = {"atol": 1e-6, "rtol": 1e-6}


def _batch() -> tuple[Tensor, Tensor]:
    """Two utterances, the second padded."""
    gen = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(2, 6400, generator=gen), torch.tensor([6400, 4800])


def _frozen(upstream_name: str) -> nn.Module:
    """The upstream as every test here builds it (seed 0), in eval mode."""
    torch.manual_seed(0)
    return load_upstream(upstream_name).eval()


def _prepared(upstream_name: str, strategy: str) -> nn.Module:
    """The same upstream (seed 0) prepared by `strategy` (its vectors drawn after seed 1)."""
    upstream = _frozen(upstream_name)
    torch.manual_seed(1)
    return get_tuning(strategy).prepare(upstream)


def _is_trained(strategy: str, name: str) -> bool:
    """Whether `name` is a parameter the strategy trains."""
    return name.endswith((".prefix_key", ".prefix_value") if strategy == "prefix" else ".prompts")


# --- prefix: one attention layer against a computation by hand ---

def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, H·d) → (B, H, T, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _attend(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, bias: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
    """softmax(q kᵀ/√d + bias) over the allowed (B, S) keys, by hand: (probabilities, mixed values)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
    probs = torch.softmax(scores.masked_fill(~allowed[:, None, None, :], float("-inf")), dim=-1)
    return probs, probs @ v


def _with_prefix(keys: Tensor, values: Tensor, key: Tensor, value: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """The prefix's (P, H·d) keys and values concatenated in front of the (B, H, T, d) ones, by hand."""
    batch = keys.shape[0]
    return (torch.cat([_heads(key.expand(batch, -1, -1), heads), keys], dim=2),
            torch.cat([_heads(value.expand(batch, -1, -1), heads), values], dim=2))


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("upstream_name", ["hubert_tiny", "wavlm_tiny"])
def test_prefix_attention_equals_a_computation_by_hand(upstream_name: str, padded: bool) -> None:
    prepared = _prepared(upstream_name, "prefix:length=3")
    module = prepared.upstream.encoder.layers[0].attention
    assert isinstance(module, PrefixAttention)
    attention, heads = module.attention, module.attention.num_heads
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 7, 32, generator=gen)
    valid = torch.tensor([[True] * 7, [True] * 4 + [False] * 3]) if padded else None
    bias = prepared.upstream.encoder._position_bias(7, x.device)  # None without relative positions (HuBERT)
    with torch.no_grad():
        module.prefix_key.normal_(0, 1.0)  # large enough that the prefix matters
        maps: list[Tensor] = []
        ours, ours_explicit = module(x, valid, bias), module(x, valid, bias, maps)

        q = _heads(attention.q_proj(x), heads)
        k, v = _with_prefix(_heads(attention.k_proj(x), heads), _heads(attention.v_proj(x), heads),
                            module.prefix_key, module.prefix_value, heads)
        allowed = torch.cat([torch.ones(2, 3, dtype=torch.bool),
                             valid if padded else torch.ones(2, 7, dtype=torch.bool)], dim=1)
        scale: Tensor | float = 0.0
        if bias is not None:  # WavLM: the gated relative bias among the frames, zero on the prefix keys
            gates = torch.sigmoid(attention.gate_linear(_heads(x, heads)).view(2, heads, 7, 2, 4).sum(-1))
            gate = gates[..., :1] * (gates[..., 1:] * attention.gate_const - 1.0) + 2.0
            scale = gate * torch.cat([torch.zeros(heads, 7, 3), bias], dim=-1)
        probs, mixed = _attend(q, k, v, allowed, scale)
        expected = attention.out_proj(mixed.transpose(1, 2).flatten(2))
    torch.testing.assert_close(ours, expected, **TOL)
    torch.testing.assert_close(ours_explicit, expected, **TOL)
    assert maps[0].shape == (2, heads, 7, 3 + 7)  # the maps have the prefix's key columns first
    torch.testing.assert_close(maps[0], probs, **TOL)


@pytest.mark.parametrize("upstream_name", ["tera_tiny", "audio_albert_tiny"])
def test_prefix_in_a_mockingjay_layer_equals_a_computation_by_hand(upstream_name: str) -> None:
    prepared = _prepared(upstream_name, "prefix:length=3")
    module = prepared.upstream.layers[0]
    assert isinstance(module, PrefixAttention) and len(prepared.upstream.layers) == 1 + (
        upstream_name == "tera_tiny")  # AudioALBERT: one shared layer, one shared prefix
    layer, heads = module.attention, module.attention.num_heads
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 7, 32, generator=gen)
    valid = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    with torch.no_grad():
        module.prefix_key.normal_(0, 1.0)
        ours = module(x, valid)
        q, k, v = (_heads(part, heads) for part in layer.qkv(x).chunk(3, dim=-1))
        k, v = _with_prefix(k, v, module.prefix_key, module.prefix_value, heads)
        _, mixed = _attend(q, k, v, torch.cat([torch.ones(2, 3, dtype=torch.bool), valid], dim=1))
        h = layer.attn_norm(x + layer.out(mixed.transpose(1, 2).flatten(2)))
        expected = layer.ffn_norm(h + layer.ffn(h))
    torch.testing.assert_close(ours, expected, **TOL)


# --- prompts: the frozen layers run by hand on prompts + frames, prompts stripped ---

def _layers(upstream: nn.Module) -> list[nn.Module]:
    """The layers a frozen upstream runs, in order (AudioALBERT: its shared layer at every depth)."""
    if isinstance(upstream, Mockingjay):
        shared = upstream.config.share_layers
        return [upstream.layers[0 if shared else i] for i in range(upstream.config.num_layers)]
    return list(upstream.encoder.layers)


@pytest.mark.parametrize("deep", [False, True])
@pytest.mark.parametrize("upstream_name", UPSTREAMS)
def test_prompted_states_equal_the_frozen_layers_run_by_hand(upstream_name: str, deep: bool) -> None:
    reference = _frozen(upstream_name)
    prepared = _prepared(upstream_name, f"prompt:length=6,deep={str(deep).lower()}")
    prompts = prepared.upstream.prompts if isinstance(reference, Mockingjay) else prepared.upstream.encoder.prompts
    assert prompts.shape == ((len(_layers(reference)), 6, 32) if deep else (6, 32))
    wavs, lens = _batch()
    with torch.no_grad():
        frozen, ours = reference(wavs, lens), prepared(wavs, lens)
        x = frozen.hidden_states[0]  # the layers' input: prompts go after the positional conv / embedding
        batch, frames = x.shape[:2]
        valid = torch.cat([torch.ones(batch, 6, dtype=torch.bool), padding_mask(frozen.lengths, frames)], dim=1)
        expected, h = [x], x
        for index, layer in enumerate(_layers(reference)):
            if index == 0 or deep:
                own = prompts[index] if deep else prompts
                h = torch.cat([own.expand(batch, -1, -1), h[:, 6:] if index else h], dim=1)
            if isinstance(reference, Mockingjay):
                h = layer(h, valid) * valid[..., None]
            else:  # WavLM's relative bias over prompts + frames: the prompts sit just before the frames
                h = layer(h, valid, reference.encoder._position_bias(6 + frames, x.device))
            expected.append(h[:, 6:])
    assert torch.equal(ours.lengths, frozen.lengths)
    assert torch.equal(ours.hidden_states[0], x)  # the frames' own input is unchanged
    for layer, (a, b) in enumerate(zip(ours.hidden_states, expected, strict=True)):
        assert a.shape == frozen.hidden_states[layer].shape
        torch.testing.assert_close(a, b, **TOL)


def test_wavlm_prompts_keep_the_frames_relative_positions() -> None:
    encoder = _frozen("wavlm_tiny").encoder
    with torch.no_grad():
        cpu = torch.device("cpu")
        extended, plain = encoder._position_bias(6 + 40, cpu), encoder._position_bias(40, cpu)
    assert torch.equal(extended[:, 6:, 6:], plain)


@pytest.mark.parametrize("upstream_name", ["wavlm_tiny", "tera_tiny"])
@pytest.mark.parametrize("strategy", ["prefix", "prompt"])
def test_attention_maps_with_prefixes_and_prompts(strategy: str, upstream_name: str) -> None:
    prepared = _prepared(upstream_name, f"{strategy}:length=4")
    wavs, lens = _batch()
    with torch.no_grad():
        plain = prepared(wavs, lens)
        out = prepared.upstream(wavs, lens, output_attentions=True)
    for a, b in zip(plain.hidden_states, out.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    frames = out.hidden_states[0].shape[1]
    valid = torch.cat([torch.ones(2, 4, dtype=torch.bool), padding_mask(out.lengths, frames)], dim=1)
    rows = frames if strategy == "prefix" else 4 + frames  # prompts are queries too; prefixes only keys
    for maps in out.attentions:
        assert maps.shape[0] == 2 and maps.shape[2:] == (rows, 4 + frames)
        torch.testing.assert_close(maps.sum(-1), torch.ones_like(maps.sum(-1)), atol=1e-5, rtol=0)
        assert not maps.masked_select(~valid[:, None, None, :]).any() and maps[..., :4].gt(0).all()


# --- training, checkpoints, padding, the frame grid ---

def _model(upstream_name: str, strategy: str) -> DownstreamModel:
    """A downstream model over the prepared upstream (the same weights and vectors every time)."""
    upstream = _frozen(upstream_name)
    torch.manual_seed(1)
    encoder = FeatureEncoder(upstream, get_tuning(strategy), layers=None)
    return DownstreamModel(encoder, nn.Linear(upstream.hidden_sizes[-1], 2))


def _states(prepared: nn.Module) -> list[Tensor]:
    """The prepared upstream's hidden states of the test batch, without gradients."""
    with torch.no_grad():
        return list(prepared(*_batch()).hidden_states)


@pytest.mark.parametrize("upstream_name", UPSTREAMS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_trains_and_saves_only_its_vectors(strategy: str, upstream_name: str, tmp_path: Path) -> None:
    frozen = _frozen(upstream_name)
    wavs, lens = _batch()
    with torch.no_grad():
        reference = frozen(wavs, lens)
    model = _model(upstream_name, strategy)
    model.train()
    prepared = model.encoder.upstream
    out = prepared(wavs, lens)
    assert torch.equal(out.lengths, reference.lengths) and prepared.frame_geometry == frozen.frame_geometry
    assert [h.shape for h in out.hidden_states] == [h.shape for h in reference.hidden_states]

    trained = {name for name, p in prepared.named_parameters() if p.requires_grad}
    assert trained and trained == {name for name, _ in prepared.named_parameters() if _is_trained(strategy, name)}
    assert sorted(get_tuning(strategy).checkpoint_keys(prepared)) == sorted(trained)
    if strategy == "prefix":  # one key/value pair per attention module (AudioALBERT: its one shared layer)
        assert len(trained) == 2 * (1 if upstream_name == "audio_albert_tiny" else 2)
    before = {name: p.detach().clone() for name, p in prepared.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    features, _ = model.encoder(FeatureBatch(cuts=None, wavs=wavs, wav_lens=lens))
    model.head(features).pow(2).sum().backward()
    optimizer.step()
    moved = {name for name, p in prepared.named_parameters() if not torch.equal(p, before[name])}
    assert moved == trained  # every vector moved, no frozen weight did
    assert all(p.grad is None for name, p in prepared.named_parameters() if name not in trained)

    state = model.state_dict()
    assert {k.removeprefix("encoder.upstream.") for k in state if k.startswith("encoder.upstream.")} == trained
    torch.save(state, tmp_path / "model.pt")
    tuned = _states(prepared)
    fresh = _model(upstream_name, strategy)
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))  # strict
    for a, b in zip(_states(fresh.encoder.upstream), tuned, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("upstream_name", UPSTREAMS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_padding_does_not_change_the_shorter_utterance(strategy: str, upstream_name: str) -> None:
    prepared = _prepared(upstream_name, strategy)
    wavs, lens = _batch()
    with torch.no_grad():
        batched, alone = prepared(wavs, lens), prepared(wavs[1:, :4800], lens[1:])
    frames = int(alone.lengths[0])
    assert frames == int(batched.lengths[1]) and alone.hidden_states[0].shape[1] == frames
    for a, b in zip(batched.hidden_states, alone.hidden_states, strict=True):
        torch.testing.assert_close(a[1, :frames], b[0], atol=1e-5, rtol=1e-5)


def test_prefix_on_a_pruned_transformer_follows_each_layers_heads() -> None:
    torch.manual_seed(0)
    upstream = load_upstream("hubert_tiny", num_layers=3, num_heads=(3, 0, 2), ffn_size=(48, 0, 40), head_dim=8)
    prepared = get_tuning("prefix").prepare(upstream.eval())
    shapes = {n: tuple(p.shape) for n, p in prepared.named_parameters() if p.requires_grad}
    assert shapes == {"upstream.encoder.layers.0.attention.prefix_key": (5, 24),
                      "upstream.encoder.layers.0.attention.prefix_value": (5, 24),
                      "upstream.encoder.layers.2.attention.prefix_key": (5, 16),
                      "upstream.encoder.layers.2.attention.prefix_value": (5, 16)}
    assert len(_states(prepared)) == 4


# --- counts, options, errors ---

@pytest.mark.parametrize("strategy, count", [("prefix", 92_160), ("prompt", 76_800), ("prompt:deep=true", 73_728)])
def test_trainable_counts_on_hubert_base_are_the_documented_ones(strategy: str, count: int) -> None:
    prepared = get_tuning(strategy).prepare(load_upstream("hubert_base"))  # random weights, no download
    assert sum(p.numel() for p in prepared.parameters() if p.requires_grad) == count
    assert count == {"prefix": 12 * 2 * 5 * 768, "prompt": 100 * 768, "prompt:deep=true": 12 * 8 * 768}[strategy]


def test_options_parse_and_bad_ones_are_one_line_errors() -> None:
    assert get_tuning("prefix").options.length == 5 and get_tuning("prefix:length=8").options.length == 8
    assert (get_tuning("prompt").length, get_tuning("prompt:deep=true").length) == (100, 8)
    custom = get_tuning("prompt:length=20,deep=true")
    assert (custom.length, custom.options.deep, custom.name) == (20, True, "prompt:length=20,deep=true")
    for text, value in [("true", True), ("Yes", True), ("1", True), ("false", False), ("no", False), ("0", False)]:
        assert get_tuning(f"prompt:deep={text}").options.deep is value
    for name, message in [("prompt:deep=maybe", "deep='maybe' is not a bool"),
                          ("prefix:length=0", "length must be >= 1"), ("prompt:length=-1", "length must be >= 0"),
                          ("prefix:depth=2", "unknown option 'depth=2'")]:
        with pytest.raises(ConfigError, match=message) as info:
            get_tuning(name)
        assert "\n" not in str(info.value)


def test_prompt_needs_a_transformer_encoder() -> None:
    class LayerOnly(nn.Module):  # transformer layers, but no TransformerEncoder to put the prompts in front of
        def __init__(self) -> None:
            super().__init__()
            self.layer = TransformerLayer(8, 2, 16)

    with pytest.raises(ConfigError, match="--tuning prompt: LayerOnly has no TransformerEncoder"):
        get_tuning("prompt").prepare(LayerOnly())
