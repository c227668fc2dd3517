"""`speechrep list`: the names each flag accepts, straight from the registries and the shipped preset folders."""
from __future__ import annotations

import pytest

from speechrep.cli import main
from speechrep.config import CONFIG_ROOT, list_presets
from speechrep.downstream.tasks import list_tasks
from speechrep.pretrain import list_methods
from speechrep.tuning import list_tunings
from speechrep.upstream.registry import list_upstreams


def _lines(capsys, *args: str) -> list[str]:
    assert main(["list", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_each_kind_one_name_a_line(capsys) -> None:
    assert _lines(capsys, "upstreams") == list_upstreams()
    assert _lines(capsys, "methods") == list_methods()
    assert _lines(capsys, "tasks") == list_tasks()
    assert _lines(capsys, "tunings") == list_tunings() and {"frozen", "full"} <= set(list_tunings())
    assert _lines(capsys, "upstreams", "hubert_*") == ["hubert_base", "hubert_large", "hubert_tiny"]


def test_presets_name_the_tasks_and_methods_they_cover(capsys) -> None:
    lines = _lines(capsys, "presets")
    tiny = next(line for line in lines if line.startswith("downstream/tiny: "))
    assert tiny.removeprefix("downstream/tiny: ").split(", ") == sorted(
        p.stem for p in (CONFIG_ROOT / "downstream" / "tiny").glob("*.yaml"))
    small = next(line for line in lines if line.startswith("pretrain/small: "))
    assert small.removeprefix("pretrain/small: ").split(", ") == sorted(
        p.stem for p in (CONFIG_ROOT / "pretrain" / "small").glob("*.yaml")) and "hubert" in small
    assert list_presets("pretrain")["tiny"] == list_methods()  # every method has a tiny preset
    assert _lines(capsys, "presets", "pretrain/*") == [line for line in lines if line.startswith("pretrain/")]
    assert "compress/tiny: heads, ffn, prune, skip, distill" in lines  # speechrep compress --preset tiny


def test_everything_under_headings(capsys) -> None:
    lines = _lines(capsys)
    assert [line for line in lines if not line.startswith("  ")] == [
        "upstreams:", "methods:", "tasks:", "presets:", "tunings:"]
    assert "  fbank" in lines and "  melhubert" in lines and "  ks" in lines and "  full" in lines


def test_unknown_kind_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "models"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'models'" in capsys.readouterr().err


def test_help_texts_point_at_the_list_command(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "speechrep list methods" in text and "--list" not in text
