"""load_upstream / export_upstream: names, export round trips, HF .bin, clear errors, no code execution."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from speechrep import load_upstream
from speechrep.errors import CheckpointError, ConfigError
from speechrep.upstream import export_upstream
from speechrep.upstream.fairseq import read_fairseq_checkpoint
from speechrep.upstream.wav2vec2 import parse_conv_spec


def _outputs(model: torch.nn.Module, seed: int = 0) -> list[torch.Tensor]:
    """Hidden states of a fixed padded batch."""
    generator = torch.Generator().manual_seed(seed)
    wavs = 0.2 * torch.randn(2, 9000, generator=generator)
    with torch.no_grad():
        return model.eval()(wavs, torch.tensor([9000, 7000])).hidden_states


def test_name_builds_registered_config_with_overrides() -> None:
    model = load_upstream("hubert_tiny", dropout=0.0)
    assert model.family == "hubert" and model.config.dropout == 0.0 and model.config.num_layers == 2
    assert model.stride == 320 and model.hidden_sizes == [32, 32, 32]


def test_unknown_name_and_missing_path() -> None:
    with pytest.raises(ValueError, match="unknown upstream 'hubert_huge'"):
        load_upstream("hubert_huge")
    with pytest.raises(CheckpointError, match="no such file"):
        load_upstream("./hubert_tiny")  # looks like a path: never falls back to the registered name


@pytest.mark.parametrize(
    "name",
    [
        "wav2vec2_tiny",
        "wav2vec2_tiny_ln_first",
        "hubert_tiny",
        "wavlm_tiny",
        "data2vec_tiny",
        "distilhubert_tiny",
        "melhubert_tiny",
    ],
)
def test_export_round_trip(name: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = load_upstream(name)
    out = export_upstream(model, tmp_path / "export", {"trained_on": "nothing", "step": 0})
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "speechrep" and meta["family"] == model.family
    assert meta["provenance"] == {"trained_on": "nothing", "step": 0}
    loaded = load_upstream(out)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.provenance == {"trained_on": "nothing", "step": 0}
    for a, b in zip(_outputs(model), _outputs(loaded)):
        assert torch.equal(a, b)
    # the same weights into a freshly built registered model
    again = load_upstream(name, checkpoint=out)
    assert all(torch.equal(a, b) for a, b in zip(_outputs(model), _outputs(again)))


def test_export_replaces_existing_directory(tmp_path: Path) -> None:
    first, second = load_upstream("hubert_tiny"), load_upstream("hubert_tiny")
    export_upstream(first, tmp_path / "m", {"n": 1})
    export_upstream(second, tmp_path / "m", {"n": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary leftovers
    assert load_upstream(tmp_path / "m").provenance == {"n": 2}


def test_missing_unexpected_and_mismatched_names(tmp_path: Path) -> None:
    export_upstream(load_upstream("wavlm_tiny"), tmp_path / "m", {})
    state = load_file(tmp_path / "m" / "model.safetensors")
    del state["encoder.rel_pos_embed.weight"]
    state["encoder.extra.weight"] = torch.zeros(2)
    state["encoder.layers.0.ffn.fc1.bias"] = torch.zeros(7)
    save_file(state, tmp_path / "m" / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_upstream(tmp_path / "m")
    message = str(info.value)
    assert "missing: encoder.rel_pos_embed.weight" in message
    assert "unexpected: encoder.extra.weight" in message
    assert "shape mismatch: encoder.layers.0.ffn.fc1.bias (7,)≠(64,)" in message
    assert "\n" not in message


def test_checkpoint_for_a_different_architecture_is_refused(tmp_path: Path) -> None:
    export_upstream(load_upstream("hubert_tiny"), tmp_path / "m", {})
    with pytest.raises(
        CheckpointError, match=r"does not fit WavLM; missing: .*encoder\.rel_pos_embed\.weight"
    ):
        load_upstream("wavlm_tiny", checkpoint=tmp_path / "m")


def test_hf_pytorch_model_bin_and_preprocessor_normalisation(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    torch.manual_seed(0)
    hf = transformers.HubertModel(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    # an older-style checkpoint: pytorch_model.bin with the legacy weight_g/weight_v names of the pos conv
    state = load_file(tmp_path / "hf" / "model.safetensors")
    legacy = {
        key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): value
        for key, value in state.items()
    }
    assert "encoder.pos_conv_embed.conv.weight_g" in legacy
    torch.save(legacy, tmp_path / "hf" / "pytorch_model.bin")
    (tmp_path / "hf" / "model.safetensors").unlink()
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    ours = load_upstream(tmp_path / "hf").eval()
    assert ours.config.normalize_waveform and ours.provenance["format"] == "huggingface"
    wavs = 0.2 * torch.randn(1, 8000) + 0.1
    normalised = (wavs - wavs.mean()) / torch.sqrt(wavs.var(unbiased=False) + 1e-5)
    with torch.no_grad():
        ref = hf(normalised, output_hidden_states=True).hidden_states[-1]
        assert (ours(wavs, torch.tensor([8000])).hidden_states[-1] - ref).abs().max() < 1e-4


class _Boom:
    def __reduce__(self):
        return os.system, ("touch pwned_by_bin",)


def test_pickled_code_is_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "hubert"}))
    torch.save({"w": _Boom()}, tmp_path / "hf" / "pytorch_model.bin")
    refused = r"refused: loading it would execute code .*posix\.system"
    with pytest.raises(CheckpointError, match=refused) as info:
        load_upstream(tmp_path / "hf")
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)  # never torch's advice
    # the legacy (pre-zip) torch format goes through the same restricted unpickler
    torch.save(
        {"cfg": {"model": {"_name": "hubert"}}, "model": {"x": _Boom()}},
        tmp_path / "model.pt",
        _use_new_zipfile_serialization=False,
    )
    with pytest.raises(CheckpointError, match="non-tensor"):
        read_fairseq_checkpoint(tmp_path / "model.pt")
    assert not (tmp_path / "pwned_by_bin").exists()


def test_unsupported_inputs_are_clear(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_upstream(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="unsupported model_type 'bert'"):
        load_upstream(tmp_path / "d")
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="x.pt"):
        load_upstream(tmp_path / "x.pt")
    torch.save(
        {"cfg": {"model": {"_name": "wav2vec_ctc", "w2v_path": "/a"}}, "model": {}}, tmp_path / "ft.pt"
    )
    with pytest.raises(CheckpointError, match="fine-tuned"):
        load_upstream(tmp_path / "ft.pt")


def test_conv_spec_is_parsed_without_eval() -> None:
    assert parse_conv_spec("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2") == (
        ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    )
    with pytest.raises(ConfigError):
        parse_conv_spec("__import__('os').system('true')")


def test_too_short_input_is_a_clear_error() -> None:
    from speechrep.errors import AudioError

    with pytest.raises(AudioError, match="fewer than the 400"):
        load_upstream("hubert_tiny")(torch.zeros(1, 300), torch.tensor([300]))


def test_hf_checkpoint_without_mask_embedding_loads(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
    )
    hf = transformers.Wav2Vec2Model(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    assert "masked_spec_embed" not in load_file(tmp_path / "hf" / "model.safetensors")
    ours = load_upstream(tmp_path / "hf").eval()
    wavs = 0.2 * torch.randn(1, 8000)
    with torch.no_grad():
        ref = hf(wavs, output_hidden_states=True).hidden_states[-1]
        assert (ours(wavs, torch.tensor([8000])).hidden_states[-1] - ref).abs().max() < 1e-4
