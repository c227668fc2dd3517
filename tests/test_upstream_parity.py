"""Parity of the wav2vec 2.0-family upstreams with Hugging Face transformers and fairseq-layout checkpoints.

Each case builds a tiny HF model with random weights, saves it with save_pretrained, loads it with
`load_upstream` and compares every hidden state; the same weights renamed into fairseq's layout (weight-norm
g/v of the positional conv included) and pickled with a config class that does not exist here load to the same
outputs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from speechrep import load_upstream  # noqa: E402
from speechrep.errors import CheckpointError  # noqa: E402
from speechrep.upstream.wav2vec2 import normalize_waveforms  # noqa: E402

TOL = 1e-4
TINY_HF = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
)
LN_FIRST = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
GROUP = dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False)
WAVLM = dict(num_buckets=32, max_bucket_distance=64)
DATA2VEC = dict(TINY_HF, num_conv_pos_embeddings=3, conv_pos_kernel_size=5)

# name: (HF config class, HF model class, config kwargs, fairseq _name, HF padded batches are exact)
CASES = {
    "wav2vec2_group": ("Wav2Vec2Config", "Wav2Vec2Model", dict(TINY_HF, **GROUP), "wav2vec2", False),
    "wav2vec2_ln_first": ("Wav2Vec2Config", "Wav2Vec2Model", dict(TINY_HF, **LN_FIRST), "wav2vec2", True),
    "hubert_group": ("HubertConfig", "HubertModel", dict(TINY_HF, **GROUP), "hubert", False),
    "hubert_ln_first": ("HubertConfig", "HubertModel", dict(TINY_HF, **LN_FIRST), "hubert", True),
    "wavlm_group": ("WavLMConfig", "WavLMModel", dict(TINY_HF, **GROUP, **WAVLM), "wavlm", False),
    "wavlm_ln_first": ("WavLMConfig", "WavLMModel", dict(TINY_HF, **LN_FIRST, **WAVLM), "wavlm", True),
    # HF's stacked positional convs see padding between layers, so only unpadded input is exact there
    "data2vec": ("Data2VecAudioConfig", "Data2VecAudioModel", DATA2VEC, "data2vec_audio", False),
}
FAMILY = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm", "data2vec_audio": "data2vec"}


def _hf_model(case: str) -> torch.nn.Module:
    """A tiny HF model with every parameter perturbed (so norms and biases are not at their init values)."""
    config_name, model_name, kwargs, _, _ = CASES[case]
    config = getattr(transformers, config_name)(**kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def _waves(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded batch of random waveforms with a DC offset (so normalisation matters)."""
    generator = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for row, length in enumerate(lengths):
        wavs[row, :length] = 0.3 * torch.randn(length, generator=generator) + 0.05
    return wavs, torch.tensor(lengths)


def _hf_hidden(
    model: torch.nn.Module, wavs: torch.Tensor, lens: torch.Tensor, normalize: bool, attention_mask: bool
) -> list[torch.Tensor]:
    """HF hidden states for the input our model sees (normalised the way HF's feature extractor does)."""
    inputs = normalize_waveforms(wavs, lens) if normalize else wavs
    mask = (torch.arange(wavs.shape[1])[None] < lens[:, None]).long() if attention_mask else None
    with torch.no_grad():
        return list(model(inputs, attention_mask=mask, output_hidden_states=True).hidden_states)


def _assert_close(
    ours: list[torch.Tensor], ref: list[torch.Tensor], lengths: torch.Tensor, same_frames: bool = True
) -> None:
    """Every hidden state equal to `TOL` on each utterance's valid frames (padding may differ in length)."""
    assert len(ours) == len(ref)
    for layer, (a, b) in enumerate(zip(ours, ref)):
        if same_frames:
            assert a.shape == b.shape, f"layer {layer}: {a.shape} vs {b.shape}"
        for row, length in enumerate(lengths.tolist()):
            diff = (a[row, :length] - b[row, :length]).abs().max().item()
            assert diff <= TOL, f"layer {layer}, utterance {row}: max |diff| {diff:.2e}"


def _architecture(model: torch.nn.Module) -> object:
    """The model's config without its training-only regularisation fields."""
    return dataclasses.replace(
        model.config,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feature_dropout=0.0,
        layer_drop=0.0,
    )


# --- fairseq layout ---

_TO_FAIRSEQ = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"^feature_extractor\.conv_layers\.0\.layer_norm\.(weight|bias)$", None),  # depends on extractor mode
    (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_extractor.conv_layers.\1.2.1."),
    (r"^feature_projection\.layer_norm\.", "layer_norm."),
    (r"^feature_projection\.projection\.", "post_extract_proj."),
    (r"^masked_spec_embed$", "mask_emb"),
    (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$", "encoder.pos_conv.0.weight_g"),
    (r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$", "encoder.pos_conv.0.weight_v"),
    (r"^encoder\.pos_conv_embed\.conv\.bias$", "encoder.pos_conv.0.bias"),
    (r"^encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.", r"encoder.pos_conv.\1.0."),
    (
        r"^encoder\.layers\.0\.attention\.rel_attn_embed\.",
        "encoder.layers.0.self_attn.relative_attention_bias.",
    ),
    (
        r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.",
        r"encoder.layers.\1.self_attn.grep_linear.",
    ),
    (r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const$", r"encoder.layers.\1.self_attn.grep_a"),
    (r"^encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"^encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
]


def _fairseq_state(hf_state: dict[str, torch.Tensor], group_norm: bool) -> dict[str, torch.Tensor]:
    """HF keys renamed to fairseq's (written independently of the converter under test)."""
    out = {}
    for key, value in hf_state.items():
        for pattern, target in _TO_FAIRSEQ:
            if re.match(pattern, key):
                if target is None:  # first conv's norm: GroupNorm at .2 (default mode) or LayerNorm at .2.1
                    target = (
                        "feature_extractor.conv_layers.0.2."
                        if group_norm
                        else "feature_extractor.conv_layers.0.2.1."
                    )
                    key = target + key.rsplit(".", 1)[1]
                else:
                    key = re.sub(pattern, target, key)
                break
        out[key] = value.clone()
    out["quantizer.vars"] = torch.zeros(1, 4, 2)  # pre-training-only parts are ignored on load
    out["final_proj.weight"] = torch.zeros(3, 32)
    return out


def _stub_module() -> types.ModuleType:
    """A module with omegaconf-like classes, present only while pickling."""
    module = types.ModuleType("speechrep_test_stub_omegaconf")

    class AnyNode:
        def __init__(self, value):
            self._val, self._metadata = value, None

    class DictConfig:
        def __init__(self, content):
            self._metadata, self._parent = None, None
            self._content = {
                k: DictConfig(v) if isinstance(v, dict) else AnyNode(v) for k, v in content.items()
            }

    class Evil:
        def __reduce__(self):
            return os.system, ("touch speechrep_pwned_marker",)

    for cls in (AnyNode, DictConfig, Evil):
        cls.__module__ = module.__name__
        cls.__qualname__ = cls.__name__
        setattr(module, cls.__name__, cls)
    return module


def _save_fairseq(
    case: str, hf_model: torch.nn.Module, path: Path, normalize: bool, drop: str | None = None
) -> None:
    """Write a fairseq-style .pt (WavLM: its own {"cfg": dict, "model": ...} layout), maybe without `drop`."""
    _, _, kwargs, name, _ = CASES[case]
    group = kwargs.get("feat_extract_norm", "layer") == "group" and name != "data2vec_audio"
    model_cfg = {
        "_name": name,
        "extractor_mode": "default" if group else "layer_norm",
        "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
        "encoder_layers": 2,
        "encoder_embed_dim": 32,
        "encoder_ffn_embed_dim": 64,
        "encoder_attention_heads": 2,
        "layer_norm_first": bool(kwargs.get("do_stable_layer_norm", False)) and name != "data2vec_audio",
        "conv_bias": bool(kwargs.get("conv_bias", False)),
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "activation_fn": "gelu",
    }
    if name == "data2vec_audio":
        model_cfg.update(conv_pos=15, pos_conv_depth=3)  # kernel = max(3, conv_pos // depth) = 5
    state = _fairseq_state(hf_model.state_dict(), group)
    if drop is not None:
        del state[drop]
        state["encoder.layers.1.surprise"] = torch.zeros(1)
    module = _stub_module()
    sys.modules[module.__name__] = module
    try:
        if name == "wavlm":
            wavlm_cfg = dict(
                model_cfg,
                relative_position_embedding=True,
                num_buckets=32,
                max_distance=64,
                normalize=normalize,
                gru_rel_pos=True,
            )
            del wavlm_cfg["_name"]
            checkpoint = {"cfg": wavlm_cfg, "model": state}
        else:
            cfg = module.DictConfig({"model": model_cfg, "task": {"normalize": normalize}})
            checkpoint = {"cfg": cfg, "model": state, "extra_state": module.Evil(), "args": None}
        # the oldest releases predate torch's zip format: exercise the legacy reader on one case
        torch.save(checkpoint, path, _use_new_zipfile_serialization=case != "wav2vec2_group")
    finally:
        del sys.modules[module.__name__]


@pytest.mark.parametrize("case", sorted(CASES))
def test_hf_and_fairseq_parity(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF dir and fairseq .pt load to models whose every layer matches HF's output_hidden_states."""
    monkeypatch.chdir(tmp_path)
    hf_model = _hf_model(case)
    hf_model.save_pretrained(tmp_path / "hf")
    ours = load_upstream(tmp_path / "hf").eval()
    assert ours.family == FAMILY[CASES[case][3]]
    normalize = ours.config.normalize_waveform
    assert normalize == (
        ours.config.conv_norm == "layer"
    )  # no preprocessor config: the original's convention

    # single utterance and an unpadded batch
    for lengths in ([8000], [8000, 8000]):
        wavs, lens = _waves(lengths)
        with torch.no_grad():
            out = ours(wavs, lens)
        assert out.lengths.tolist() == [out.hidden_states[0].shape[1]] * len(lengths)
        _assert_close(out.hidden_states, _hf_hidden(hf_model, wavs, lens, normalize, False), out.lengths)

    # padded batch: equal to each utterance alone, and to HF where HF is padding-correct
    wavs, lens = _waves([16000, 11000, 6000], seed=2)
    with torch.no_grad():
        batch = ours(wavs, lens)
        for row, length in enumerate(lens.tolist()):
            alone = ours(wavs[row : row + 1, :length], lens[row : row + 1])
            assert alone.lengths.item() == batch.lengths[row].item() == alone.hidden_states[0].shape[1]
            _assert_close(
                [h[row : row + 1] for h in batch.hidden_states],
                alone.hidden_states,
                alone.lengths,
                same_frames=False,
            )
            _assert_close(
                alone.hidden_states,
                _hf_hidden(hf_model, wavs[row : row + 1, :length], lens[row : row + 1], normalize, False),
                alone.lengths,
            )
    if CASES[case][4]:
        _assert_close(batch.hidden_states, _hf_hidden(hf_model, wavs, lens, normalize, True), batch.lengths)

    # the same weights in fairseq's layout, pickled with config classes that do not exist at load time
    _save_fairseq(case, hf_model, tmp_path / "model.pt", normalize)
    from_fairseq = load_upstream(tmp_path / "model.pt").eval()
    assert not (tmp_path / "speechrep_pwned_marker").exists()
    assert from_fairseq.family == ours.family and _architecture(from_fairseq) == _architecture(ours)
    with torch.no_grad():
        again = from_fairseq(wavs, lens)
    _assert_close(again.hidden_states, batch.hidden_states, batch.lengths)


def test_mask_time_indices_match_hf(tmp_path: Path) -> None:
    """Masked frames replaced by the learned mask embedding give HF's hidden states for the same mask."""
    hf_model = _hf_model("hubert_group")
    hf_model.save_pretrained(tmp_path / "hf")
    ours = load_upstream(tmp_path / "hf").eval()
    wavs, lens = _waves([8000])
    mask = torch.zeros(1, 24, dtype=torch.bool)
    mask[0, 3:8] = mask[0, 15:19] = True
    with torch.no_grad():
        feats, lengths = ours.extract_features(wavs, lens)
        hidden, _ = ours.encode(feats, lengths, mask_time_indices=mask)
        ref = hf_model(wavs, mask_time_indices=mask, output_hidden_states=True).hidden_states
        unmasked, _ = ours.encode(feats, lengths)
    _assert_close(hidden, list(ref), lengths)
    assert (hidden[-1] - unmasked[-1]).abs().max() > 1e-2  # the mask changed the output


def test_fairseq_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    """A fairseq checkpoint lacking a parameter names it in one CheckpointError."""
    hf_model = _hf_model("wav2vec2_group")
    _save_fairseq(
        "wav2vec2_group", hf_model, tmp_path / "broken.pt", False, drop="encoder.layers.1.fc2.weight"
    )
    with pytest.raises(
        CheckpointError,
        match=r"missing: encoder\.layers\.1\.ffn\.fc2\.weight.*unexpected: "
        r"encoder\.layers\.1\.surprise",
    ):
        load_upstream(tmp_path / "broken.pt")
