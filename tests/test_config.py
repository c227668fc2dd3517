"""Typed YAML configs: defaults, YAML, overrides, nesting, and the errors for unknown keys and wrong types."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from speechrep.config import config_to_dict, load_config, save_config
from speechrep.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["linear", "cosine"] = "linear"


@dataclass
class Head:
    hidden: int = 8
    dropout: float = 0.1


@dataclass
class Experiment:
    name: str = "exp"
    layers: Optional[list[int]] = None
    use_cmvn: bool = False
    data_dir: Path = Path("data")
    tags: dict[str, str] = field(default_factory=lambda: {"corpus": "synthetic"})
    optim: Optim = field(default_factory=Optim)
    head: Head | None = None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file():
    assert load_config(Experiment) == Experiment()


def test_yaml_then_overrides_nested(tmp_path: Path):
    path = write(tmp_path, "name: ks\nlayers: [1, 2]\nuse_cmvn: true\noptim:\n  lr: 1e-4\n  betas: [0.8, 0.9]\n")
    cfg = load_config(Experiment, path, ["optim.lr=3e-4", "optim.schedule=cosine", "layers=[3, 4, 5]",
                                         "data_dir=/tmp/x", "name=123", "head.hidden=16"])
    assert cfg.name == "123"  # str fields take the text verbatim
    assert cfg.layers == [3, 4, 5]
    assert cfg.use_cmvn is True
    assert cfg.data_dir == Path("/tmp/x")
    assert cfg.optim == Optim(lr=3e-4, betas=(0.8, 0.9), schedule="cosine")
    assert cfg.head == Head(hidden=16, dropout=0.1)  # unset Optional sub-config starts from its defaults


def test_int_accepted_for_float_and_null_for_optional(tmp_path: Path):
    cfg = load_config(Experiment, write(tmp_path, "optim:\n  lr: 1\nlayers: [0]\n"), ["layers=null"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.layers is None


def test_round_trip_through_save(tmp_path: Path):
    cfg = load_config(Experiment, None, ["layers=[2]", "tags={a: b}", "head.dropout=0.5", "optim.betas=[0.5, 0.6]"])
    save_config(cfg, tmp_path / "out.yaml", extra={"provenance": {"seed": 1}})
    assert load_config(Experiment, tmp_path / "out.yaml") == cfg
    assert config_to_dict(cfg)["optim"]["betas"] == [0.5, 0.6]
    assert config_to_dict(cfg)["data_dir"] == "data"


@pytest.mark.parametrize("text", ["yes", "no", "on", "off", "1", "0", "True ish", "\"true\""])
def test_bool_is_only_true_or_false(tmp_path: Path, text: str):
    with pytest.raises(ConfigError, match="use_cmvn"):
        load_config(Experiment, write(tmp_path, f"use_cmvn: {text}\n"))
    with pytest.raises(ConfigError, match="use_cmvn"):
        load_config(Experiment, None, [f"use_cmvn={text}"])


@pytest.mark.parametrize("text,expected", [("true", True), ("false", False), ("True", True), ("FALSE", False)])
def test_bool_true_false_spellings(text: str, expected: bool):
    assert load_config(Experiment, None, [f"use_cmvn={text}"]).use_cmvn is expected


def test_unknown_yaml_key_names_key_file_and_valid_keys(tmp_path: Path):
    path = write(tmp_path, "optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Experiment, path)
    message = str(e.value)
    assert "optim.lrr" in message and str(path) in message and "lr, betas, schedule" in message


def test_unknown_override_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"'optim\.momentum'.*lr, betas, schedule"):
        load_config(Experiment, None, ["optim.momentum=0.9"])
    with pytest.raises(ConfigError, match="'nme'"):
        load_config(Experiment, None, ["nme=x"])
    with pytest.raises(ConfigError, match="not a nested config"):
        load_config(Experiment, None, ["name.sub=x"])


@pytest.mark.parametrize("override,key", [
    ("optim.lr=fast", "optim.lr"),
    ("head.hidden=1.5", "head.hidden"),
    ("optim.schedule=step", "optim.schedule"),
    ("layers=[1, x]", "layers[1]"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("optim.lr=true", "optim.lr"),
])
def test_wrong_type_names_key(override: str, key: str):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        load_config(Experiment, None, [override])


def test_malformed_override_and_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Experiment, None, ["optim.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Experiment, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Experiment, write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="head"):
        load_config(Experiment, write(tmp_path, "head: 3\n"))


def test_missing_required_key(tmp_path: Path):
    @dataclass
    class Needs:
        corpus_dir: Path

    with pytest.raises(ConfigError, match="corpus_dir"):
        load_config(Needs)
    assert load_config(Needs, None, ["corpus_dir=/data/x"]).corpus_dir == Path("/data/x")


def test_no_code_is_evaluated():
    cfg = load_config(Experiment, None, ["name=__import__('os').system('false')"])
    assert cfg.name == "__import__('os').system('false')"
    with pytest.raises(ConfigError, match="head.hidden"):
        load_config(Experiment, None, ["head.hidden=__import__('os').getpid()"])


@dataclass
class WithPresetOptim:
    optim: Optim = field(default_factory=lambda: Optim(lr=5.0, schedule="cosine"))


def test_nested_values_overlay_the_parents_default(tmp_path: Path):
    cfg = load_config(WithPresetOptim, write(tmp_path, "optim:\n  betas: [0.1, 0.2]\n"), ["optim.lr=2"])
    assert cfg.optim == Optim(lr=2.0, betas=(0.1, 0.2), schedule="cosine")


def test_several_yaml_files_overlay_in_order(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("name: base\noptim:\n  lr: 0.5\n  schedule: cosine\n")
    (tmp_path / "tiny.yaml").write_text("optim:\n  lr: 0.1\n")
    cfg = load_config(Experiment, [tmp_path / "base.yaml", tmp_path / "tiny.yaml"], ["head.hidden=2"])
    assert (cfg.name, cfg.optim.lr, cfg.optim.schedule, cfg.head.hidden) == ("base", 0.1, "cosine", 2)
    with pytest.raises(ConfigError, match="tiny.yaml"):
        (tmp_path / "tiny.yaml").write_text("optim:\n  lr: fast\n")
        load_config(Experiment, [tmp_path / "base.yaml", tmp_path / "tiny.yaml"])


def test_override_one_entry_of_a_mapping_field():
    cfg = load_config(Experiment, None, ["tags.split=dev"])
    assert cfg.tags == {"corpus": "synthetic", "split": "dev"}
    with pytest.raises(ConfigError, match="tags"):
        load_config(Experiment, None, ["tags.split=[1, 2]"])
