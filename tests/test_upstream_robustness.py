"""Loading robustness (issue 22): damaged files and configs fail with one line; random weights are seeded."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from speechrep import hear
from speechrep.errors import AudioError, CheckpointError, ConfigError
from speechrep.upstream import export_upstream, load_upstream
from speechrep.upstream.loading import load_upstream_for_inference


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export_upstream(load_upstream("hubert_tiny"), tmp_path_factory.mktemp("e") / "hubert", {"n": 1})


def _copy(export: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for name in ("config.json", "model.safetensors"):
        (target / name).write_bytes((export / name).read_bytes())
    return target


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_safetensors_is_one_checkpoint_error(export: Path, tmp_path: Path, damage: str) -> None:
    target = _copy(export, tmp_path)
    weights = target / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\xff" * 64, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file") as info:
        load_upstream(target)
    _one_line(info)
    with pytest.raises(CheckpointError):  # checkpoint= goes through the same reader
        load_upstream("hubert_tiny", checkpoint=weights)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "expected a JSON object, got list"),
    ("null", "expected a JSON object, got NoneType"),
    ("{family: x", "not valid JSON"),
])
def test_config_json_that_is_not_an_object(export: Path, tmp_path: Path, text: str, message: str) -> None:
    target = _copy(export, tmp_path)
    (target / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=message) as info:
        load_upstream(target)
    _one_line(info)


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", "32", "hidden_size='32' is not of type int"),
    ("num_layers", 2.5, "num_layers=2.5 is not of type int"),
    ("layer_norm_first", 1, "layer_norm_first=1 is not of type bool"),
    ("conv_layers", [[32, 10]], "conv_layers=.* is not of type"),
    ("hidden_size", 10 ** 9, "hidden_size=1000000000 is outside the sane range"),
    ("num_layers", 10 ** 6, "num_layers=1000000 is outside the sane range 0..1000"),
    ("hidden_size", -4, "outside the sane range"),
    ("ffn_size", 1 << 20, "parameters, more than the sane limit"),  # each size fine, the total absurd
])
def test_config_fields_are_checked_before_building(
    export: Path, tmp_path: Path, field: str, value: object, message: str
) -> None:
    target = _copy(export, tmp_path)
    meta = json.loads((target / "config.json").read_text())
    meta["config"][field] = value
    if field == "ffn_size":
        meta["config"].update(hidden_size=65536, num_heads=1, num_layers=1)  # 1.4e11 parameters
    (target / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=message) as info:
        load_upstream(target)
    assert str(target) in _one_line(info)


def test_config_object_of_the_wrong_kind(export: Path, tmp_path: Path) -> None:
    target = _copy(export, tmp_path)
    meta = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps(dict(meta, config=[1, 2])))
    with pytest.raises(ConfigError, match="'config' must be a JSON object") as info:
        load_upstream(target)
    _one_line(info)


def test_non_finite_weights_are_refused_naming_the_tensor(export: Path, tmp_path: Path) -> None:
    target = _copy(export, tmp_path)
    state = load_file(target / "model.safetensors")
    state["encoder.layers.1.ffn.fc2.weight"][0, 0] = math.inf
    save_file(state, str(target / "model.safetensors"))
    named = r"tensor encoder\.layers\.1\.ffn\.fc2\.weight holds NaN or Inf"
    with pytest.raises(CheckpointError, match=named):
        load_upstream(target)


def test_plain_state_dict_pt_loads_like_bin(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = load_upstream("hubert_tiny").eval()
    for suffix in (".bin", ".pt", ".pth"):
        path = tmp_path / f"weights{suffix}"
        torch.save(source.state_dict(), path)
        loaded = load_upstream("hubert_tiny", checkpoint=path).eval()
        pairs = zip(source.state_dict().values(), loaded.state_dict().values())
        assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(CheckpointError, match=r"a plain state dict loads with its architecture's") as info:
        load_upstream(tmp_path / "weights.pt")  # no config in it: the name says which model
    _one_line(info)


@pytest.mark.parametrize("name", ["apc_tiny", "vq_apc_tiny", "npc_tiny", "mockingjay_tiny", "tera_tiny"])
def test_log_mel_families_reject_audio_shorter_than_one_frame(name: str) -> None:
    model = load_upstream(name).eval()
    need = model.frame_geometry.min_samples
    with pytest.raises(AudioError, match=f"fewer than the {need} one"):
        model(torch.randn(2, 1000), torch.tensor([1000, need - 1]))
    assert int(model(torch.randn(1, need), torch.tensor([need])).lengths[0]) == 1


def test_random_weights_for_inference_are_seeded_by_name_and_warn_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("speechrep.upstream.loading._WARNED_RANDOM", set())
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with caplog.at_level(logging.WARNING):
        first = load_upstream_for_inference("hubert_tiny")
        second = load_upstream_for_inference("hubert_tiny")
        load_upstream_for_inference("fbank")  # parameter-free: nothing to warn about
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched
    assert [r.getMessage() for r in caplog.records] == ["hubert_tiny: random weights; pass a checkpoint"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    other = load_upstream_for_inference("wav2vec2_tiny")
    assert not torch.equal(other.encoder.layers[0].ffn.fc1.weight, first.encoder.layers[0].ffn.fc1.weight)
    # the same in another process
    code = ("import torch; from speechrep.upstream.loading import load_upstream_for_inference as f; "
            "print(float(f('hubert_tiny').encoder.layers[0].ffn.fc1.weight.double().sum()))")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    here = first.encoder.layers[0].ffn.fc1.weight.detach().double().sum()
    assert float(run.stdout.split()[-1]) == float(here)


def test_pretraining_path_still_initialises_from_the_global_rng() -> None:
    torch.manual_seed(7)
    a = load_upstream("hubert_tiny")
    torch.manual_seed(7)
    b = load_upstream("hubert_tiny")
    torch.manual_seed(8)
    c = load_upstream("hubert_tiny")
    w = lambda m: m.encoder.layers[0].ffn.fc1.weight  # noqa: E731
    assert torch.equal(w(a), w(b)) and not torch.equal(w(a), w(c))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_hear_rejects_non_finite_audio(value: float) -> None:
    model = hear.load_model(upstream="apc_tiny")
    audio = torch.zeros(2, 16000)
    audio[1, 100] = value
    with pytest.raises(AudioError, match="hear: sound 1 has NaN or Inf samples"):
        hear.get_scene_embeddings(audio, model)
    with pytest.raises(AudioError):
        hear.get_timestamp_embeddings(audio, model)
