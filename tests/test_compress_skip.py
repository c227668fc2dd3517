"""Skip-ahead: identity attention folded into one linear, diagonality of attention maps, exports, cost."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from speechrep.compress.profile import count_macs
from speechrep.compress.skip import (
    attention_diagonality,
    skip_attention,
    skip_layer_sizes,
    skipped_layers,
)
from speechrep.compress.structured import prune_ffn, prune_heads
from speechrep.errors import ConfigError
from speechrep.nn.transformer import SelfAttention
from speechrep.tuning.prompts import Prefix, Prompt, PromptOptions
from speechrep.upstream import export_upstream, load_upstream
from speechrep.upstream.melhubert import MelHuBERTConfig
from speechrep.upstream.wav2vec2 import Wav2Vec2Config

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["hubert_tiny", "melhubert_tiny", "wavlm_tiny", "wav2vec2_tiny_ln_first"]
LENS = torch.tensor([8000, 5600])


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return load_upstream(name).eval()


def _wavs() -> Tensor:
    return 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))


def _outputs(model: nn.Module) -> list[Tensor]:
    with torch.no_grad():
        return model.eval()(_wavs(), LENS).hidden_states


def _first(layer: int, num_layers: int = 2) -> list[float]:
    """A diagonality that ranks `layer` as the most diagonal."""
    return [1.0 if index == layer else 0.0 for index in range(num_layers)]


def _diagonal_only(attention: SelfAttention) -> None:
    """Make `attention` compute SelfAttention with a mask that allows only the diagonal (every frame sees
    itself), through its own projections and softmax: the reference that the folded linear must match."""
    def forward(x: Tensor, valid=None, position_bias=None, attentions=None, prefix=None) -> Tensor:
        batch, length, _ = x.shape
        q, k, v = (attention._split(p(x)) for p in (attention.q_proj, attention.k_proj, attention.v_proj))
        weights = SelfAttention.attention_weights(q, k, torch.eye(length, dtype=torch.bool))
        out = (weights @ v).transpose(1, 2).reshape(batch, length, -1)
        return attention.out_proj(out)
    attention.forward = forward


@pytest.mark.parametrize("name", NAMES)
def test_keeping_every_attention_is_bit_exact(name: str) -> None:
    model = _model(name)
    same = skip_attention(model, 1.0, [0.9, 0.1])
    assert skipped_layers(same) == [] and same.config.identity_attention == ()
    assert same.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(_outputs(model), _outputs(same)))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layer", [0, 1])
def test_folded_identity_attention_matches_a_diagonal_mask(name: str, layer: int) -> None:
    model = _model(name)
    skipped = skip_attention(model, 0.5, _first(layer))
    assert skipped_layers(skipped) == [layer] and skipped.config.identity_attention == (layer,)
    block = skipped.encoder.layers[layer]
    assert block.attention is None and block.identity.proj.weight.shape == (32, 32)
    assert not any(k.startswith(f"encoder.layers.{layer}.attention.") for k in skipped.state_dict())
    _diagonal_only(model.encoder.layers[layer].attention)
    for a, b in zip(_outputs(model), _outputs(skipped)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_skipped_layer_reports_the_identity_map_and_stays_skipped() -> None:
    model = _model("hubert_tiny")
    skipped = skip_attention(model, 0.5, _first(1))
    with torch.no_grad():
        maps = skipped(_wavs(), LENS, output_attentions=True).attentions
    frames = maps[0].shape[-1]
    assert maps[0].shape == (2, 2, frames, frames)
    assert torch.equal(maps[1], torch.eye(frames).expand(2, 1, frames, frames))
    diagonality = attention_diagonality(skipped, [(_wavs(), LENS)], band=0)
    assert diagonality[1] == 1.0 and diagonality[0] < 1.0
    # skipping more of a skipped model keeps the earlier choice, whatever the new ranking says
    assert skipped_layers(skip_attention(skipped, 0.5, [1.0, 0.0])) == [1]
    assert skipped_layers(skip_attention(skipped, 1.0, [1.0, 0.0])) == [1]
    assert skipped_layers(skip_attention(skipped, 0.01, [1.0, 0.0])) == [0, 1]
    assert skip_layer_sizes(skipped) == {"heads": [2, 0], "ffn": [64, 64], "skipped": [1]}


def _zero_queries_and_keys(model: nn.Module) -> None:
    with torch.no_grad():
        for block in model.encoder.layers:
            for proj in (block.attention.q_proj, block.attention.k_proj):
                proj.weight.zero_()
                proj.bias.zero_()


@pytest.mark.parametrize("band", [0, 1, 3])
def test_a_uniform_map_has_the_band_fraction_of_its_mass_near_the_diagonal(band: int) -> None:
    model = _model("hubert_tiny")
    _zero_queries_and_keys(model)  # q = k = 0: every query spreads its mass evenly over the valid keys
    with torch.no_grad():
        lengths = model(_wavs(), LENS).lengths.tolist()
    assert lengths[0] > lengths[1]  # the padded utterance counts only its valid queries and keys
    # query i of n frames sees the keys j in [i − band, i + band] ∩ [0, n), each with mass 1/n
    expected = sum(((2 * band + 1) * n - band * (band + 1)) / n**2 for n in lengths) / len(lengths)
    diagonality = attention_diagonality(model, [(_wavs(), LENS)], band=band)
    assert diagonality == pytest.approx([expected, expected], abs=1e-6)


def test_a_diagonal_map_scores_one() -> None:
    model = _model("wavlm_tiny")
    _zero_queries_and_keys(model)
    with torch.no_grad():  # relative position bias: +40 on distance 0 (bucket 0), 0 elsewhere
        model.encoder.rel_pos_embed.weight.zero_()
        model.encoder.rel_pos_embed.weight[0] = 40.0
    batches = [(_wavs(), LENS), (_wavs()[:1, :4000], torch.tensor([4000]))]
    assert attention_diagonality(model, batches, band=0) == pytest.approx([1.0, 1.0], abs=1e-6)
    # and skipping such a layer changes next to nothing on valid frames (the map was the identity already;
    # a padded query frame never sees its own masked key, so padding differs)
    skipped = skip_attention(model, 0.5, attention_diagonality(model, batches))
    with torch.no_grad():
        valid = model(_wavs(), LENS).lengths.tolist()
    for a, b in zip(_outputs(model), _outputs(skipped)):
        for index, count in enumerate(valid):
            torch.testing.assert_close(a[index, :count], b[index, :count], rtol=0, atol=1e-5)


def test_diagonality_ranks_layers_and_leaves_the_mode_alone() -> None:
    torch.manual_seed(0)
    model = load_upstream("melhubert_tiny", num_heads=1).train()
    _zero_queries_and_keys(model)
    # layer 1: q = k = 20·x, one head; its post-LN input frames all have the norm √D, so x_i·x_j < x_i·x_i
    # for any other frame and the softmax of 400·x_i·x_j/√D peaks on the diagonal
    with torch.no_grad():
        attention = model.encoder.layers[1].attention
        for proj in (attention.q_proj, attention.k_proj):
            proj.weight.copy_(20 * torch.eye(32))
    diagonality = attention_diagonality(model, [(_wavs(), LENS)])
    assert model.training and diagonality[1] > diagonality[0]
    assert skipped_layers(skip_attention(model, 0.5, diagonality)) == [1]


@pytest.mark.parametrize("name", ["hubert_tiny", "melhubert_tiny", "wavlm_tiny"])
def test_export_round_trip_keeps_outputs_and_the_config(name: str, tmp_path: Path) -> None:
    skipped = skip_attention(_model(name), 0.5, _first(0))
    export_upstream(skipped, tmp_path / "skip", {"compress": "skip"})
    meta = json.loads((tmp_path / "skip" / "config.json").read_text())
    assert meta["config"]["identity_attention"] == [0]
    loaded = load_upstream(tmp_path / "skip").eval()
    assert loaded.config.identity_attention == (0,) and skipped_layers(loaded) == [0]
    assert all(torch.equal(a, b) for a, b in zip(_outputs(skipped), _outputs(loaded)))


@pytest.mark.parametrize("name", ["hubert_tiny", "wavlm_tiny"])
def test_macs_fall_and_the_skipped_layer_has_no_attention_products(name: str) -> None:
    model = _model(name)
    wavs = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    full_kind, full_layer, frames = count_macs(model, wavs, torch.tensor([16000]))
    skipped = skip_attention(model, 0.5, _first(1))
    kind, layer, _ = count_macs(skipped, wavs, torch.tensor([16000]))
    assert sum(kind.values()) < sum(full_kind.values())
    assert layer[1] < full_layer[1] and layer[0] == full_layer[0]
    assert kind["attention products"] < full_kind["attention products"]
    # the skipped layer's attention costs one D×D linear per frame (T·D² MACs) instead of q, k, v and out
    # (4·T·D²) and WavLM's gate
    gate = full_kind["attention projections"] // 2 - 4 * frames * 32 * 32
    assert (gate > 0) == (name == "wavlm_tiny")
    assert full_kind["attention projections"] - kind["attention projections"] == 3 * frames * 32 * 32 + gate


def test_prefix_and_prompts_pass_a_skipped_layer() -> None:
    skipped = skip_attention(_model("hubert_tiny"), 0.5, _first(0))
    Prefix().insert(skipped)  # only the layer that still has attention gets a prefix
    assert type(skipped.encoder.layers[1].attention).__name__ == "PrefixAttention"
    assert skipped.encoder.layers[0].attention is None
    assert len(_outputs(skipped)) == 3
    prompted = skip_attention(_model("wavlm_tiny"), 0.5, _first(1))
    Prompt(PromptOptions(length=4)).insert(prompted)
    with torch.no_grad():
        out = prompted.eval()(_wavs(), LENS, output_attentions=True)
    frames = out.hidden_states[0].shape[1]
    assert out.attentions[1].shape == (2, 1, frames + 4, frames + 4)
    assert all(h.shape[1] == frames for h in out.hidden_states)


def test_config_validation() -> None:
    assert Wav2Vec2Config(num_layers=3, identity_attention=[2, 0]).identity_attention == (0, 2)
    for bad, match in [((3,), "not a layer index"), ((-1,), "not a layer index"), ((1, 1), "listed twice"),
                       ((True,), "not a layer index"), (1, "sequence")]:
        with pytest.raises(ConfigError, match=match):
            Wav2Vec2Config(num_layers=3, identity_attention=bad)
        with pytest.raises(ConfigError, match=match):
            MelHuBERTConfig(num_layers=3, identity_attention=bad)
    with pytest.raises(ConfigError, match="identity_attention"):
        load_upstream("hubert_tiny", identity_attention=(2,))
    # a default model has no identity-attention parameters at all
    assert not any("identity" in key for key in _model("hubert_tiny").state_dict())


def test_skip_attention_refuses_what_it_cannot_skip() -> None:
    model = _model("hubert_tiny")
    with pytest.raises(ConfigError, match="no transformer layers"):
        skip_attention(_model("apc_tiny"), 0.5, [0.0, 0.0])
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        skip_attention(model, 0.0, [0.0, 0.0])
    with pytest.raises(ConfigError, match="3 values for 2 layers"):
        skip_attention(model, 0.5, [0.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="not a number"):
        skip_attention(model, 0.5, [float("nan"), 0.0])
    with pytest.raises(ConfigError, match="band"):
        attention_diagonality(model, [(_wavs(), LENS)], band=-1)
    with pytest.raises(ConfigError, match="no batches"):
        attention_diagonality(model, [])


def test_a_layer_without_heads_has_no_diagonality_and_is_never_skipped() -> None:
    torch.manual_seed(0)
    model = load_upstream("hubert_tiny", num_heads=(2, 0)).eval()
    diagonality = attention_diagonality(model, [(_wavs(), LENS)])
    assert 0 < diagonality[0] < 1 and diagonality[1] != diagonality[1]  # nan
    assert skipped_layers(skip_attention(model, 0.01, diagonality)) == [0]


def test_head_and_ffn_pruning_keep_the_skipped_layers() -> None:
    skipped = skip_attention(_model("hubert_tiny"), 0.5, _first(1))
    for pruned in (prune_heads(skipped, 0.5), prune_ffn(skipped, 0.5)):
        assert skipped_layers(pruned) == [1]
        folded = pruned.encoder.layers[1].identity.proj.weight
        assert torch.equal(folded, skipped.encoder.layers[1].identity.proj.weight)
