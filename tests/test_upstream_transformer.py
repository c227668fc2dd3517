"""Per-layer head counts and FFN sizes (pruned models round-trip through export); attention maps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from speechrep.errors import ConfigError
from speechrep.nn.frames import padding_mask
from speechrep.upstream import export_upstream, load_upstream

PRUNED = {  # 3 layers: a layer without attention, a layer without FFN, different head counts and FFN sizes
    "per-layer heads": dict(num_layers=3, num_heads=(4, 0, 1), ffn_size=(64, 16, 0)),
    "explicit head_dim": dict(num_layers=3, num_heads=(3, 0, 2), ffn_size=(48, 0, 40), head_dim=8),
}


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return 0.3 * torch.randn(2, 6400, generator=gen), torch.tensor([6400, 4000])


@pytest.mark.parametrize("name", ["hubert_tiny", "melhubert_tiny", "wav2vec2_tiny_ln_first"])
@pytest.mark.parametrize("variant", list(PRUNED))
def test_pruned_transformer_round_trips_with_its_real_shapes(name: str, variant: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = load_upstream(name, **PRUNED[variant], dropout=0.0, attention_dropout=0.0).eval()
    layers = model.encoder.layers
    assert layers[1].attention is None and layers[2 if variant == "per-layer heads" else 1].ffn is None
    inner = 3 * 8 if variant == "explicit head_dim" else 4 * 8
    assert layers[0].attention.q_proj.weight.shape == (inner, 32)
    assert layers[0].attention.out_proj.weight.shape == (32, inner)
    out = export_upstream(model, tmp_path / name, {"variant": variant})
    loaded = load_upstream(out).eval()
    assert loaded.config == model.config
    wavs, lens = _batch()
    with torch.no_grad():
        a, b = model(wavs, lens), loaded(wavs, lens)
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states))
    # padding still never changes the real frames
    with torch.no_grad():
        alone = model(wavs[1:, :4000], lens[1:])
    valid = int(alone.lengths[0])
    for x, y in zip(a.hidden_states, alone.hidden_states):
        torch.testing.assert_close(x[1, :valid], y[0], atol=1e-5, rtol=1e-5)


def test_int_sizes_equal_the_same_sizes_per_layer() -> None:
    torch.manual_seed(0)
    uniform = load_upstream("hubert_tiny").eval()
    torch.manual_seed(0)
    listed = load_upstream("hubert_tiny", num_heads=(uniform.config.num_heads,) * 2,
                           ffn_size=(uniform.config.ffn_size,) * 2).eval()
    wavs, lens = _batch()
    with torch.no_grad():
        assert all(torch.equal(x, y) for x, y in zip(uniform(wavs, lens).hidden_states,
                                                      listed(wavs, lens).hidden_states))


@pytest.mark.parametrize("overrides, message", [
    (dict(num_heads=(2, 2, 2)), "3 values for 2 layers"),
    (dict(ffn_size=(64,)), "1 values for 2 layers"),
    (dict(num_heads=(3, 2)), "not divisible by num_heads 3"),
])
def test_per_layer_sizes_are_checked(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_upstream("hubert_tiny", **overrides)


def test_wavlm_relative_bias_needs_one_head_count() -> None:
    with pytest.raises(ValueError, match="one head count"):
        load_upstream("wavlm_tiny", num_heads=(4, 2))


@pytest.mark.parametrize("name, overrides", [
    ("hubert_tiny", {}), ("wavlm_tiny", {}), ("melhubert_tiny", {}),
    ("hubert_tiny", dict(num_layers=3, num_heads=(3, 0, 2), ffn_size=(48, 0, 40), head_dim=8)),
])
def test_attention_maps_on_request(name: str, overrides: dict) -> None:
    torch.manual_seed(0)
    model = load_upstream(name, **overrides).eval()
    wavs, lens = _batch()
    with torch.no_grad():
        plain = model(wavs, lens)
        out = model(wavs, lens, output_attentions=True)
    assert plain.attentions is None
    layers = model.encoder.layers
    assert len(out.attentions) == len(layers)
    for x, y in zip(plain.hidden_states, out.hidden_states):  # the explicit path computes the same states
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    frames = out.hidden_states[0].shape[1]
    valid = padding_mask(out.lengths, frames)
    bias = model.encoder._position_bias(frames, wavs.device)
    for index, (layer, maps) in enumerate(zip(layers, out.attentions)):
        heads = 0 if layer.attention is None else layer.attention.num_heads
        assert maps.shape == (2, heads, frames, frames)
        if not heads:
            continue
        # row-stochastic over valid keys, zero on padded keys
        torch.testing.assert_close(maps.sum(-1), torch.ones(2, heads, frames), atol=1e-5, rtol=0)
        assert not maps.masked_select(~valid[:, None, None, :]).any()
        # the maps reproduce the layer's attention output: out_proj(maps @ v)
        x = out.hidden_states[index]
        x = layer.attention_norm(x) if layer.layer_norm_first else x
        attention = layer.attention
        key_mask = valid if bool((out.lengths < frames).any()) else None
        with torch.no_grad():
            expected = attention(x, key_mask, bias)
            v = attention._split(attention.v_proj(x))
            mixed = (maps @ v).transpose(1, 2).reshape(2, frames, heads * attention.head_dim)
            torch.testing.assert_close(attention.out_proj(mixed), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mockingjay_tiny", "audio_albert_tiny"])
def test_mockingjay_family_attention_maps_on_request(name: str) -> None:
    torch.manual_seed(0)
    model = load_upstream(name).eval()
    wavs, lens = _batch()
    with torch.no_grad():
        plain = model(wavs, lens)
        out = model(wavs, lens, output_attentions=True)
    assert plain.attentions is None and len(out.attentions) == model.config.num_layers
    for x, y in zip(plain.hidden_states, out.hidden_states):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    frames = out.hidden_states[0].shape[1]
    valid = padding_mask(out.lengths, frames)
    for index, maps in enumerate(out.attentions):
        assert maps.shape == (2, model.config.num_heads, frames, frames)
        torch.testing.assert_close(maps.sum(-1), torch.ones_like(maps.sum(-1)), atol=1e-5, rtol=0)
        assert not maps.masked_select(~valid[:, None, None, :]).any()
        layer = model.layers[0 if model.config.share_layers else index]
        x = out.hidden_states[index]
        with torch.no_grad():  # out(maps @ v) is the attention block's output
            _, _, v = layer.qkv(x).unflatten(-1, (3, layer.num_heads, -1)).permute(2, 0, 3, 1, 4)
            mixed = layer.out((maps @ v).transpose(1, 2).flatten(2))
            q, k, v = layer.qkv(x).unflatten(-1, (3, layer.num_heads, -1)).permute(2, 0, 3, 1, 4)
            sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
            expected = layer.out(sdpa.transpose(1, 2).flatten(2))
            torch.testing.assert_close(mixed, expected, atol=1e-5, rtol=1e-5)
