"""`speechrep synth --hear`: synthetic tasks in the HEAR layout, read back by the HEAR runner and checked
against what the generator says it made (sources, voices, notes, events) and against the audio itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechrep.bench import hear_eval as he
from speechrep.cli import main
from speechrep.data.synth import hear_tasks as ht
from speechrep.data.synth.text import KEYWORDS
from speechrep.storage import OutputError

pytestmark = pytest.mark.usefixtures("one_thread")
SR = 16000
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
LABELS = {
    "speech_commands": [*KEYWORDS, "_unknown_", "_silence_"],
    "lang_id": ["de", "en", "es", "fr", "it", "pt"],
    "speaker_count": ["1", "2", "3", "4"],
    "pitch": [f"{n}{octave}" for octave in (3, 4) for n in NOTE_NAMES],
    "events": ["alarm", "burst", "chirp", "knock"],
}
EVENT_METRICS = ("event_onset_200ms_fms", "segment_1s_er", "event_onset_offset_50ms_20perc_fms")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hear_synth") / "a"
    ht.make_hear_tasks(out, preset="tiny", seed=0, num_workers=2)
    return out


def _records(task_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (task_dir / "generation.jsonl").read_text().splitlines()]


def _audio(task_dir: Path, record: dict) -> np.ndarray:
    x, rate = sf.read(task_dir / "16000" / record["split"] / record["file"])
    assert rate == SR and x.ndim == 1
    return x


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".speechrep")}


def test_every_task_reads_in_the_hear_layout(root: Path) -> None:
    assert he.find_tasks(root) == [root / name for name in sorted(ht.TASKS)]
    for name, (_, counts) in ht.PRESETS["tiny"].items():
        task = he.read_task(root / name)
        event = name == "events"
        assert task.name == f"synth_{name}" and task.labels == LABELS[name]
        assert (task.embedding_type, task.prediction_type) == (
            ("event", "multilabel") if event else ("scene", "multiclass"))
        assert task.evaluation == (list(EVENT_METRICS) if event else ["top1_acc"])
        assert task.data_splits == [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]
        for split, count in zip(("train", "valid", "test"), counts):
            targets = task.label_file(split)
            assert len(targets) == count
            for file, target in targets.items():
                x, rate = sf.read(root / name / "16000" / split / file)
                assert rate == SR and x.shape == (round(task.sample_duration * SR),)
                labels = [e["label"] for e in target] if event else target
                assert set(labels) <= set(task.labels) and (event or len(labels) == 1)
            if not event:  # every class in every split
                assert {t[0] for t in targets.values()} == set(task.labels)
        # the generator's record holds the same targets
        assert {(r["split"], r["file"]): r["target"] for r in _records(root / name)} == {
            (s, f): t for s in task.splits for f, t in task.label_file(s).items()}


def test_same_seed_same_bytes_other_seed_differs(root: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    ht.make_hear_tasks(again, preset="tiny", seed=0, num_workers=1)  # another worker count, too
    assert _files(again) == _files(root)
    other = tmp_path / "other"
    ht.make_hear_tasks(other, preset="tiny", seed=1, tasks=["speech_commands", "pitch"], num_workers=2)
    for name in ("speech_commands", "pitch"):
        ours, theirs = _files(root / name), _files(other / name)
        audio = [k for k in ours if k.endswith(".wav")]
        assert sorted(audio) == sorted(k for k in theirs if k.endswith(".wav"))
        assert sum(ours[k] != theirs[k] for k in audio) > 0.9 * len(audio)


def test_speech_tasks_labels_voices_and_disjoint_speakers(root: Path) -> None:
    for name in ("speech_commands", "lang_id", "speaker_count"):
        records = _records(root / name)
        speakers = {split: {s["speaker"] for r in records if r["split"] == split
                            for s in r.get("sources", [r])} for split in ("train", "valid", "test")}
        assert not (speakers["train"] & speakers["valid"] or speakers["train"] & speakers["test"]
                    or speakers["valid"] & speakers["test"])
    for r in _records(root / "speech_commands"):
        [label] = r["target"]
        assert r["text"] == label if label in KEYWORDS else (r["text"] == "") == (label == "_silence_")
    records = _records(root / "lang_id")
    voices = {r["voice"].split("+")[0] for r in records}
    assert len({r["language"] for r in records}) == 6 and len(voices) >= 4
    for r in records:
        assert r["target"] == [r["language"]] and r["voice"].split("+")[0] in ht.LANGUAGES[r["language"]]
        words, _ = ht._vocabulary(r["language"])
        assert set(r["text"].split()) <= set(words)
    for r in _records(root / "speaker_count"):
        sources = r["sources"]
        assert r["target"] == [str(len(sources))] and len({s["speaker"] for s in sources}) == len(sources)
        assert len(r["speech_spans"]) == len(sources) and max(abs(s["level_db"]) for s in sources) <= 3.0
        # they talk at once: all sources speak together for at least a second of the 3 s clip
        spans = np.array(r["speech_spans"])
        assert spans[:, 1].min() - spans[:, 0].max() >= 1.0


def _lowest_strong_note(x: np.ndarray) -> int:
    """The lowest MIDI note (36..84) with a spectral peak within ±30 cents at ≥ 0.2 of the strongest one."""
    magnitude = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1.0 / SR)
    for note in range(36, 85):
        f = 440.0 * 2.0 ** ((note - 69) / 12)
        near = (freqs > f * 2 ** (-30 / 1200)) & (freqs < f * 2 ** (30 / 1200))
        if magnitude[near].max() >= 0.2 * magnitude.max():
            return note
    raise AssertionError("no strong partial")


def test_pitch_tones_have_the_labelled_fundamental(root: Path) -> None:
    for r in _records(root / "pitch"):
        [name] = r["target"]
        midi = 12 * (int(name[-1]) + 1) + NOTE_NAMES.index(name[:-1])
        assert _lowest_strong_note(_audio(root / "pitch", r)) == midi == r["midi"], r


def test_events_lie_inside_the_clip_and_are_louder_than_the_background(root: Path) -> None:
    kinds = set()
    for r in _records(root / "events"):
        x = _audio(root / "events", r)
        assert 1 <= len(r["target"]) <= 3
        quiet = np.ones(len(x), bool)
        for e in r["target"]:
            assert 0.0 <= e["start"] < e["end"] <= 4000.0
            quiet[int(e["start"] * SR / 1000):int(e["end"] * SR / 1000)] = False
            same = [o for o in r["target"] if o is not e and o["label"] == e["label"]]
            assert all(o["end"] <= e["start"] or o["start"] >= e["end"] for o in same)
            kinds.add(e["label"])
        background = np.mean(x[quiet] ** 2)
        for e in r["target"]:
            inside = x[int(e["start"] * SR / 1000):int(e["end"] * SR / 1000)]
            assert 10 * np.log10(np.mean(inside**2) / background) > 3.0, (r["file"], e)
    assert kinds == set(LABELS["events"])


def test_rerun_skips_complete_tasks_other_settings_fail(root: Path, monkeypatch) -> None:
    leftover = root / ".tmp-pitch"  # a killed build's half task
    leftover.mkdir()
    (leftover / "task_metadata.json").write_text("{}")
    monkeypatch.setattr(ht, "build_task", lambda *a: pytest.fail("a complete task was rebuilt"))
    ht.make_hear_tasks(root, preset="tiny", seed=0)
    assert not leftover.exists()
    with pytest.raises(OutputError, match="seed: 0 -> 1"):
        ht.make_hear_tasks(root, preset="tiny", seed=1)
    with pytest.raises(OutputError, match="preset"):
        ht.make_hear_tasks(root, preset="small", seed=0)


def test_cli_synth_hear_alone_and_hear_eval_above_chance(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synth"
    assert main(["synth", "--hear-tasks", "pitch", "--preset", "tiny", "--out", str(out),
                 "--workers", "1"]) == 0
    assert "hear/pitch: train 72, valid 24, test 24" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["hear"]  # no subsets
    before = _files(out / "hear" / "pitch")
    (out / "hear" / "pitch" / ".complete").unlink()  # an unmarked task is rebuilt, identically
    assert main(["synth", "--hear", "--hear-tasks", "pitch", "--out", str(out), "--workers", "1"]) == 0
    assert _files(out / "hear" / "pitch") == before
    capsys.readouterr()
    assert main(["synth", "--hear", "--out", str(out), "--seed", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "seed: 0 -> 1" in err and "--overwrite" in err
    assert main(["synth", "--hear-tasks", "pitch,nope", "--out", str(out)]) == 2
    assert "unknown synthetic HEAR task" in capsys.readouterr().err

    assert main(["hear-eval", "--upstream", "fbank_raw", "--tasks", str(out / "hear"), "--out",
                 str(tmp_path / "eval"), "--grid", "small", "--grid-points", "1", "--max-epochs", "60"]) == 0
    result = json.loads((tmp_path / "eval" / "synth_pitch" / "results.json").read_text())
    assert result["test"]["top1_acc"] > 5 / 24  # chance: 1/24
