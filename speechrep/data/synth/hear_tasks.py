"""Synthetic tasks in the HEAR 2021 layout, read by `speechrep hear-eval` (`speechrep.bench.hear_eval`).

`make_hear_tasks(output_dir, preset="tiny", seed=0, tasks=None, num_workers=2)` (or
`speechrep synth --hear --preset {tiny,small,full} --out DIR`, which writes DIR/hear/) writes, per task:

    <task>/task_metadata.json        task_name synth_<task>, embedding/prediction type, split_mode
                                     trainvaltest, sample_duration, evaluation (the first metric chooses)
    <task>/labelvocabulary.csv       idx,label
    <task>/{train,valid,test}.json   {file: [label]} (scene), {file: [{"label", "start", "end"}]} (event, ms)
    <task>/16000/<split>/*.wav       16 kHz mono 16-bit WAV, every clip exactly sample_duration long
    <task>/generation.jsonl          what made each clip (speakers, voices, sources, instrument, events)
    <task>/.complete                 preset, seed, sizes: a re-run skips a task that has it

The tasks (splits disjoint in speakers, or in instruments for `pitch`):

- `speech_commands` (speech, scene, multiclass; 1 s): the mini-SUPERB keyword clips (`subsets.plan_ks`):
  yes/no/up/down/left/right/on/off/stop/go, `_unknown_` (other words) and `_silence_` (noise only).
- `lang_id` (speech, scene, multiclass; 3 s): de/en/es/fr/it/pt read by eSpeak NG voices of each language
  (regional accents where eSpeak has them, every voice variant), words drawn with the language's wordfreq
  frequencies.
- `speaker_count` (speech, scene, multiclass; 3 s): 1-4 different English speakers talking at once, each
  source at the same level ±3 dB; label `1`..`4`.
- `pitch` (music, scene, multiclass; 1 s): additive-synthesis notes (`hear_sounds.instrument_note`) of the 24
  MIDI notes 48-71 (C3-B4), labelled by note name; detune ≤ ±10 cents, vibrato ≤ 15 cents.
- `events` (environment, event, multilabel; 4 s): coloured noise with 1-3 events of alarm/burst/chirp/knock
  at random onsets, 0.3-1.2 s long, 6-18 dB above the noise; two events of one kind never overlap.

A task is built in `.tmp-<task>/` and renamed into place when complete, so a killed run leaves no half task.
The folder records preset and seed: another preset or seed there is an error unless `overwrite`.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from speechrep.audio import augment
from speechrep.audio.io import save_audio
from speechrep.data.synth import espeak
from speechrep.data.synth import hear_sounds as sounds
from speechrep.data.synth import text as texts
from speechrep.data.synth.render import SAMPLE_RATE, UtteranceSpec, job_single, render_speech
from speechrep.data.synth.speakers import make_speakers
from speechrep.data.synth.subsets import _assign, _spec, plan_ks
from speechrep.data.synth.workers import SynthesisRunner
from speechrep.errors import ConfigError
from speechrep.storage import (
    OutputError,
    OutputFolder,
    atomic_write_json,
    atomic_write_text,
    disk_errors,
    forked_children_release_locks,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1
_MARKER = ".complete"
# wordfreq language → eSpeak NG voices of that language (accents), all present in espeakng-loader's data
LANGUAGES: dict[str, tuple[str, ...]] = {
    "de": ("de",), "en": ("en-us", "en", "en-gb-x-rp", "en-gb-scotland"), "es": ("es", "es-419"),
    "fr": ("fr", "fr-be", "fr-ch"), "it": ("it",), "pt": ("pt", "pt-br"),
}
NOTES = tuple(range(48, 72))  # C3..B4
DURATIONS = {"speech_commands": 1.0, "lang_id": 3.0, "speaker_count": 3.0, "pitch": 1.0, "events": 4.0}

Sizes = tuple[tuple[int, int, int], tuple[int, int, int]]  # pool per split (speakers, instruments), clips
# Pools: speakers (speech_commands, speaker_count), speakers per language (lang_id), instruments (pitch).
PRESETS: dict[str, dict[str, Sizes]] = {
    "tiny": {"speech_commands": ((4, 2, 2), (24, 12, 12)), "lang_id": ((2, 1, 1), (24, 12, 12)),
             "speaker_count": ((6, 4, 4), (16, 8, 8)), "pitch": ((4, 2, 2), (72, 24, 24)),
             "events": ((0, 0, 0), (16, 6, 6))},
    "small": {"speech_commands": ((24, 8, 8), (480, 120, 120)), "lang_id": ((6, 2, 2), (360, 120, 120)),
              "speaker_count": ((24, 8, 8), (240, 80, 80)), "pitch": ((16, 4, 4), (480, 120, 120)),
              "events": ((0, 0, 0), (200, 50, 50))},
    "full": {"speech_commands": ((200, 40, 40), (6000, 1200, 1200)),
             "lang_id": ((30, 8, 8), (3000, 600, 600)), "speaker_count": ((200, 40, 40), (2400, 600, 600)),
             "pitch": ((60, 12, 12), (4800, 1200, 1200)),
             "events": ((0, 0, 0), (2000, 400, 400))},
}


@dataclass
class Clip:
    """One clip: its file name, target (labels, or events in ms), synthesis job and generation record."""

    file: str
    target: list
    job: tuple[list[UtteranceSpec], Callable, tuple]  # (utterances to speak, fn(syntheses, *args), args)
    record: dict


@dataclass(frozen=True)
class Task:
    """A task's metadata and its planner: (rng, audio dir per split, pools, counts) → labels, clips."""

    kind: str  # speech | music | environment (the metadata's `kind`; hear-eval does not read it)
    embedding_type: str
    prediction_type: str
    sample_duration: float
    evaluation: tuple[str, ...]
    plan: Callable[..., tuple[list[str], dict[str, list[Clip]]]]


# --------------------------------------------------------------------------------- jobs (run in workers)

def _job_speech(syntheses: list[espeak.Synthesis], spec: UtteranceSpec, path: Path) -> dict:
    return {"speech_span": job_single(syntheses, spec, path)["speech_span"]}


def _job_mixture(syntheses: list[espeak.Synthesis], specs: list[UtteranceSpec], levels_db: list[float],
                 path: Path) -> dict:
    """Sources rendered without background, each at the same RMS over its speech × its level, summed."""
    sources = [render_speech(spec, synth, background=False)[0] for spec, synth in zip(specs, syntheses)]
    mix = 0.0
    for source, level in zip(sources, levels_db):
        start, end = (int(round(t * SAMPLE_RATE)) for t in source.speech_span)
        rms = np.sqrt(augment.signal_power(source.audio[start:end]) + 1e-12)
        mix = mix + source.audio / rms * 10.0 ** (level / 20.0)
    mix = mix * 10.0 ** (-26.0 / 20.0) / np.sqrt(augment.signal_power(mix))
    save_audio(path, mix * min(1.0, 0.9 / float(np.max(np.abs(mix)))), SAMPLE_RATE)
    return {"speech_spans": [s.speech_span for s in sources]}


def _job_note(syntheses: list, instrument: dict, note: int, detune: float, gate: float, level: float,
              seed: int, path: Path) -> dict:
    save_audio(path, sounds.instrument_note(instrument, note, detune, gate, level, seed), SAMPLE_RATE)
    return {}


def _job_events(syntheses: list, events: list[dict], background: dict, duration: float, seed: int,
                path: Path) -> dict:
    save_audio(path, sounds.event_scene(events, background, duration, seed), SAMPLE_RATE)
    return {}


# ------------------------------------------------------------------------------------------- planners

def _voice(spec: UtteranceSpec) -> dict:
    return {"speaker": spec.speaker.id, "voice": spec.speaker.voice, "text": spec.text,
            "snr_db": spec.snr, "reverb_rt60_s": spec.reverb_rt60}


def plan_speech_commands(rng: np.random.Generator, dirs: dict[str, Path], pools: tuple[int, int, int],
                         counts: tuple[int, int, int]) -> tuple[list[str], dict[str, list[Clip]]]:
    """The KS subset's plan (keywords, speakers, effects), its clips written as WAV in the HEAR splits."""
    ks = plan_ks(rng, dirs["train"], pools, counts)  # its FLAC paths are replaced by WAVs per split
    commands, _ = texts.keyword_words()
    labels = list(commands) + [texts.UNKNOWN_KEYWORD, texts.SILENCE_KEYWORD]
    clips: dict[str, list[Clip]] = {}
    for split, ks_split in zip(SPLITS, ("train", "dev", "test")):
        clips[split] = []
        for i, item in enumerate(ks.items[ks_split]):
            spec = item.job[0][0]
            label = spec.text if spec.text in commands else (
                texts.UNKNOWN_KEYWORD if spec.text else texts.SILENCE_KEYWORD)
            file = f"{split}_{i:05d}.wav"
            clips[split].append(Clip(file, [label], ([spec], _job_speech, (spec, dirs[split] / file)),
                                     _voice(spec)))
    return labels, clips


@functools.lru_cache(maxsize=None)
def _vocabulary(language: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Frequent words of a language and their normalised frequencies (English: the corpus' own list)."""
    if language == "en":
        return texts.vocabulary()
    import wordfreq

    words = tuple(w for w in wordfreq.top_n_list(language, 3000) if w.isalpha() and len(w) > 1)
    freqs = np.array([wordfreq.word_frequency(w, language) for w in words], dtype=np.float64)
    return words, freqs / freqs.sum()


def _speaker_pools(rng: np.random.Generator, pools: tuple[int, int, int], prefix: str,
                   accents: Sequence[str] | None = None) -> dict[str, list]:
    """Speaker-disjoint pools per split (`make_speakers`; `accents`: eSpeak voices to draw from instead)."""
    everyone = make_speakers(rng, sum(pools), prefix)
    if accents is not None:
        everyone = [replace(s, accent=accents[int(rng.integers(len(accents)))]) for s in everyone]
    bounds = np.cumsum((0,) + tuple(pools))
    return {split: everyone[bounds[i]:bounds[i + 1]] for i, split in enumerate(SPLITS)}


def plan_lang_id(rng: np.random.Generator, dirs: dict[str, Path], pools: tuple[int, int, int],
                 counts: tuple[int, int, int]) -> tuple[list[str], dict[str, list[Clip]]]:
    """Words of each language by frequency, spoken by that language's speakers; classes balanced."""
    languages = sorted(LANGUAGES)
    speakers = {lang: _speaker_pools(rng, pools, f"{lang}_spk", LANGUAGES[lang]) for lang in languages}
    clips: dict[str, list[Clip]] = {}
    for split, n in zip(SPLITS, counts):
        per_language = {lang: iter(_assign(rng, speakers[lang][split], n)) for lang in languages}
        clips[split] = []
        for i in range(n):
            lang = languages[i % len(languages)]
            words, probs = _vocabulary(lang)
            text = " ".join(words[j] for j in rng.choice(len(words), size=int(rng.integers(7, 11)), p=probs))
            spec = _spec(rng, next(per_language[lang]), text, total_duration=DURATIONS["lang_id"])
            file = f"{split}_{i:05d}.wav"
            clips[split].append(Clip(file, [lang], ([spec], _job_speech, (spec, dirs[split] / file)),
                                     {"language": lang, **_voice(spec)}))
    return languages, clips


def plan_speaker_count(rng: np.random.Generator, dirs: dict[str, Path], pools: tuple[int, int, int],
                       counts: tuple[int, int, int]) -> tuple[list[str], dict[str, list[Clip]]]:
    """1-4 distinct speakers of the split reading sentences at once; classes balanced."""
    speakers = _speaker_pools(rng, pools, "count_spk")
    clips: dict[str, list[Clip]] = {}
    for split, n in zip(SPLITS, counts):
        clips[split] = []
        for i in range(n):
            count = 1 + i % 4
            chosen = [speakers[split][j] for j in rng.choice(len(speakers[split]), size=count, replace=False)]
            specs = [_spec(rng, s, texts.random_sentence(rng, 12, 18), effects=False,
                           total_duration=DURATIONS["speaker_count"]) for s in chosen]
            levels = rng.uniform(-3.0, 3.0, size=count).round(2).tolist()
            file = f"{split}_{i:05d}.wav"
            job = (specs, _job_mixture, (specs, levels, dirs[split] / file))
            sources = [{**_voice(s), "level_db": level} for s, level in zip(specs, levels)]
            clips[split].append(Clip(file, [str(count)], job, {"sources": sources}))
    return [str(c) for c in range(1, 5)], clips


def plan_pitch(rng: np.random.Generator, dirs: dict[str, Path], pools: tuple[int, int, int],
               counts: tuple[int, int, int]) -> tuple[list[str], dict[str, list[Clip]]]:
    """Every note equally often per split, played by the split's own instruments."""
    everyone = [sounds.draw_instrument(rng, f"inst{i:03d}") for i in range(sum(pools))]
    bounds = np.cumsum((0,) + tuple(pools))
    clips: dict[str, list[Clip]] = {}
    for s, (split, n) in enumerate(zip(SPLITS, counts)):
        instruments = _assign(rng, everyone[bounds[s]:bounds[s + 1]], n)
        clips[split] = []
        for i, instrument in enumerate(instruments):
            note = NOTES[i % len(NOTES)]
            detune, gate = float(rng.uniform(-10.0, 10.0)), float(rng.uniform(0.5, 0.8))
            level, seed = float(rng.uniform(-30.0, -15.0)), int(rng.integers(2**31))
            file = f"{split}_{i:05d}.wav"
            job = ([], _job_note, (instrument, note, detune, gate, level, seed, dirs[split] / file))
            clips[split].append(Clip(file, [sounds.note_name(note)], job, {
                "midi": note, "f0_hz": round(sounds.midi_hz(note) * 2 ** (detune / 1200), 3),
                "instrument": instrument["name"], "profile": instrument["profile"], "detune_cents": detune,
                "gate_s": gate}))
    return [sounds.note_name(n) for n in NOTES], clips


def _draw_events(rng: np.random.Generator, duration: float) -> list[dict]:
    """1-3 events inside the clip (100 ms from its ends), never two of one kind overlapping."""
    n_total, events = int(round(duration * SAMPLE_RATE)), []
    margin = int(0.1 * SAMPLE_RATE)
    for _ in range(int(rng.integers(1, 4))):
        kind = sounds.EVENT_KINDS[int(rng.integers(len(sounds.EVENT_KINDS)))]
        length = int(rng.integers(int(0.3 * SAMPLE_RATE), int(1.2 * SAMPLE_RATE) + 1))
        for _ in range(20):
            onset = int(rng.integers(margin, n_total - margin - length + 1))
            if all(e["params"]["kind"] != kind or onset >= e["offset"] or onset + length <= e["onset"]
                   for e in events):
                events.append({"onset": onset, "offset": onset + length, "snr_db": float(rng.uniform(6, 18)),
                               "params": sounds.draw_event(rng, kind)})
                break
    return sorted(events, key=lambda e: e["onset"])


def plan_events(rng: np.random.Generator, dirs: dict[str, Path], pools: tuple[int, int, int],
                counts: tuple[int, int, int]) -> tuple[list[str], dict[str, list[Clip]]]:
    """Coloured-noise scenes with 1-3 events each; targets in ms."""
    duration = DURATIONS["events"]
    clips: dict[str, list[Clip]] = {}
    for split, n in zip(SPLITS, counts):
        clips[split] = []
        for i in range(n):
            events = _draw_events(rng, duration)
            background = {"exponent": float(rng.uniform(0.0, 2.0)),
                          "level_dbfs": float(rng.uniform(-45.0, -30.0))}
            seed, file = int(rng.integers(2**31)), f"{split}_{i:05d}.wav"
            target = [{"label": e["params"]["kind"], "start": 1000.0 * e["onset"] / SAMPLE_RATE,
                       "end": 1000.0 * e["offset"] / SAMPLE_RATE} for e in events]
            job = ([], _job_events, (events, background, duration, seed, dirs[split] / file))
            clips[split].append(Clip(file, target, job, {"background": background, "events": events}))
    return list(sounds.EVENT_KINDS), clips


_SCENE = ("top1_acc",)
_EVENT = ("event_onset_200ms_fms", "segment_1s_er", "event_onset_offset_50ms_20perc_fms")
TASKS: dict[str, Task] = {
    "speech_commands": Task("speech", "scene", "multiclass", DURATIONS["speech_commands"], _SCENE,
                            plan_speech_commands),
    "lang_id": Task("speech", "scene", "multiclass", DURATIONS["lang_id"], _SCENE, plan_lang_id),
    "speaker_count": Task("speech", "scene", "multiclass", DURATIONS["speaker_count"], _SCENE,
                          plan_speaker_count),
    "pitch": Task("music", "scene", "multiclass", DURATIONS["pitch"], _SCENE, plan_pitch),
    "events": Task("environment", "event", "multilabel", DURATIONS["events"], _EVENT, plan_events),
}


# ------------------------------------------------------------------------------------------ the build

def _marker(name: str, preset: str, seed: int) -> dict:
    pools, counts = PRESETS[preset][name]
    return {"preset": preset, "seed": seed, "sizes": [list(pools), list(counts)],
            "format_version": FORMAT_VERSION}


def _is_complete(task_dir: Path, preset: str, seed: int) -> bool:
    try:
        return json.loads((task_dir / _MARKER).read_text()) == _marker(task_dir.name, preset, seed)
    except (OSError, ValueError):
        return False


def build_task(name: str, output_dir: Path, preset: str, seed: int, runner: SynthesisRunner) -> Path:
    """Build one task in `.tmp-<name>/`, check every clip was written, then rename it to `<name>/`."""
    task, final, tmp = TASKS[name], output_dir / name, output_dir / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    dirs = {split: tmp / str(SAMPLE_RATE) / split for split in SPLITS}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    # each task has its own stream: building one alone gives the same task as building all
    rng = np.random.default_rng([seed, 1000 + list(TASKS).index(name)])
    labels, clips = task.plan(rng, dirs, *PRESETS[preset][name])
    records = []
    for split in SPLITS:
        results = dict(runner.run([clip.job for clip in clips[split]], desc=f"hear/{name}/{split}"))
        failed = [clip.file for i, clip in enumerate(clips[split]) if results[i] is None]
        if failed:
            raise OutputError(f"{tmp}: {len(failed)} clips of {split} failed to synthesise (see the warnings "
                              "above); run the same command again to rebuild the task")
        atomic_write_json(tmp / f"{split}.json", {clip.file: clip.target for clip in clips[split]})
        records += [{"split": split, "file": clip.file, "target": clip.target, **clip.record, **results[i]}
                    for i, clip in enumerate(clips[split])]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([("idx", "label"), *enumerate(labels)])
    atomic_write_text(tmp / "labelvocabulary.csv", buffer.getvalue())
    atomic_write_text(tmp / "generation.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_json(tmp / "task_metadata.json", {
        "task_name": f"synth_{name}", "version": f"speechrep-synth-hear-{FORMAT_VERSION}", "kind": task.kind,
        "embedding_type": task.embedding_type, "prediction_type": task.prediction_type,
        "split_mode": "trainvaltest", "sample_duration": task.sample_duration,
        "evaluation": list(task.evaluation), "preset": preset, "seed": seed})
    atomic_write_text(tmp / _MARKER, json.dumps(_marker(name, preset, seed)))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def make_hear_tasks(output_dir: Path, preset: str = "tiny", seed: int = 0, tasks: Sequence[str] | None = None,
                    num_workers: int = 2, overwrite: bool = False) -> dict[str, Path]:
    """Build (or finish) the synthetic HEAR tasks under `output_dir`; complete tasks are skipped.

    The folder is locked for the run and records preset and seed; another preset or seed there is an
    OutputError unless `overwrite` empties it first. Returns {task: its folder}."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown HEAR task preset {preset!r} (choose from {sorted(PRESETS)})")
    names = list(TASKS if tasks is None else tasks)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ConfigError(f"unknown synthetic HEAR task(s) {unknown} (choose from {list(TASKS)})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError(f"workers: expected an integer >= 1, got {num_workers!r}")
    output_dir = Path(output_dir).resolve()
    forked_children_release_locks()
    with OutputFolder(output_dir, "speechrep synth --hear", {"preset": preset, "seed": seed}, overwrite), \
            disk_errors(output_dir):
        for leftover in output_dir.glob(".tmp-*"):  # a killed build's half task
            if leftover.is_dir():
                shutil.rmtree(leftover)
        todo = [n for n in names if not _is_complete(output_dir / n, preset, seed)]
        for name in sorted(set(names) - set(todo), key=names.index):
            log.info("hear/%s: already complete, skipped", name)
        if todo:
            with SynthesisRunner(num_workers) as runner:
                for name in todo:
                    log.info("hear/%s: building (%s preset, seed %d)", name, preset, seed)
                    build_task(name, output_dir, preset, seed, runner)
    return {name: output_dir / name for name in names}
