"""Every downstream preset file (configs/downstream/<preset>/<task>.yaml) layers cleanly on its task config."""
from __future__ import annotations

import pytest

from speechrep.downstream.runner import CONFIG_DIR, load_task_config
from speechrep.downstream.tasks import get_task, list_tasks

PRESET_FILES = sorted(p.relative_to(CONFIG_DIR) for p in CONFIG_DIR.glob("*/*.yaml"))


def test_preset_directories_exist():
    assert {p.parts[0] for p in PRESET_FILES} >= {"tiny", "demo", "small"}
    assert {p.stem for p in PRESET_FILES if p.parts[0] == "tiny"} == set(list_tasks())


@pytest.mark.parametrize("path", PRESET_FILES, ids=str)
def test_preset_file_names_a_task_and_parses_against_its_config(path):
    preset, task = path.parts[0], path.stem
    assert task in list_tasks(), f"{path}: no task named {task!r}"
    cfg = load_task_config(get_task(task), preset)
    base = load_task_config(get_task(task))
    assert cfg.subset == base.subset  # a preset resizes a task, never points it at another subset
    assert (CONFIG_DIR / path).read_text().lstrip().startswith("#"), f"{path}: starts with a comment"
