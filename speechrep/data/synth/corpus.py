"""Build the mini-SUPERB synthetic corpus: presets, the build loop (resumable, atomic), manifests, cards.

A subset is marked complete (`<subset>/.complete`) only after its build verifiably finished: every planned
item synthesised, every split's manifest holding its cuts, every audio file present and non-empty. A run
that stops early (a full disk, a kill, a failed utterance) leaves the subset unmarked, and the same command
run again rebuilds it. The output folder is held by one run at a time (`speechrep.storage.OutputFolder`).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from lhotse import CutSet, MonoCut

from speechrep.data.synth.card import write_card, write_domain_card
from speechrep.data.synth.domains import DOMAIN_SUBSETS, DOMAINS, domain_split, plan_domain
from speechrep.data.synth.prosodic import PROSODIC_PLANNERS
from speechrep.data.synth.subsets import PLANNERS, SPLITS, Plan
from speechrep.data.synth.workers import SynthesisRunner
from speechrep.errors import ConfigError
from speechrep.storage import (OutputError, OutputFolder, atomic_write_bytes, atomic_write_text, disk_errors,
                               forked_children_release_locks)

log = logging.getLogger(__name__)

SUBSETS: tuple[str, ...] = (
    "unlabeled",
    "pr",
    "asr",
    "ks",
    "qbe",
    "sid",
    "asv",
    "sd",
    "er",
    "ic",
    "sf",
    "se",
    "ss",
)
# Built only when named (`--subsets sentence_type,emphasis,irony`, `--subsets ood_asr`, `--subsets st`), never
# by default: the corpus a default or older command builds stays the same.
OPT_IN_SUBSETS: tuple[str, ...] = (*PROSODIC_PLANNERS, "ood_asr", "st")
_PLANNERS = {**PLANNERS, **PROSODIC_PLANNERS}
FORMAT_VERSION = 1
DOMAIN_VERSION = 1  # of the out-of-domain test splits (`domains`): a change rebuilds them, not the subsets
_MARKER = ".complete"
_DOMAIN_STREAM = 1  # the random streams of domain splits: [seed, subset index, _DOMAIN_STREAM, domain index]

Sizes = dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]]  # subset -> (speakers, items) per split

# speakers per split (sid: the shared speaker count in every position) and items per split: utterances,
# or mixtures (ss), conversations (sd), documents (qbe: plus a quarter as many queries); the prosodic subsets'
# counts are multiples of their class count (each sentence is spoken once per class).
PRESETS: dict[str, Sizes] = {
    # "micro" exists for the test suite: every subset, a few items each, in seconds.
    "micro": {
        "unlabeled": ((2, 1, 1), (4, 2, 2)),
        "pr": ((2, 1, 1), (3, 2, 2)),
        "asr": ((2, 1, 1), (3, 2, 2)),
        "ks": ((2, 1, 1), (12, 4, 4)),
        "qbe": ((2, 1, 1), (4, 4, 4)),
        "sid": ((3, 3, 3), (6, 3, 3)),
        "asv": ((2, 2, 2), (4, 4, 4)),
        "sd": ((2, 2, 2), (1, 1, 1)),
        "er": ((2, 1, 1), (4, 4, 4)),
        "ic": ((2, 1, 1), (4, 2, 2)),
        "sf": ((2, 1, 1), (4, 2, 2)),
        "se": ((2, 1, 1), (2, 2, 2)),
        "ss": ((2, 2, 2), (2, 1, 1)),
        "sentence_type": ((2, 1, 1), (6, 3, 3)),
        "emphasis": ((2, 1, 1), (6, 3, 3)),
        "irony": ((2, 1, 1), (4, 2, 2)),
        "ood_asr": ((2, 1, 1), (4, 2, 2)),  # per domain (es, de, fr, spontaneous)
        "st": ((2, 1, 1), (4, 2, 2)),
    },
    "tiny": {
        "unlabeled": ((6, 2, 2), (24, 6, 6)),
        "pr": ((4, 2, 2), (12, 6, 6)),
        "asr": ((4, 2, 2), (12, 6, 6)),
        "ks": ((6, 3, 3), (36, 12, 12)),
        "qbe": ((3, 2, 2), (8, 8, 8)),
        "sid": ((6, 6, 6), (24, 12, 12)),
        "asv": ((6, 3, 3), (18, 9, 9)),
        "sd": ((4, 2, 2), (4, 2, 2)),
        "er": ((6, 2, 2), (24, 8, 8)),
        "ic": ((4, 2, 2), (16, 8, 8)),
        "sf": ((4, 2, 2), (16, 8, 8)),
        "se": ((4, 2, 2), (8, 4, 4)),
        "ss": ((4, 2, 2), (8, 4, 4)),
        "sentence_type": ((6, 2, 2), (24, 9, 9)),
        "emphasis": ((6, 2, 2), (24, 9, 9)),
        "irony": ((6, 2, 2), (24, 8, 8)),
        "ood_asr": ((4, 2, 2), (12, 6, 6)),  # per domain, like asr
        "st": ((4, 2, 2), (24, 8, 8)),
    },
    "small": {
        "unlabeled": ((40, 5, 5), (1100, 60, 60)),
        "pr": ((20, 5, 5), (400, 80, 80)),
        "asr": ((20, 5, 5), (400, 80, 80)),
        "ks": ((40, 10, 10), (1200, 240, 240)),
        "qbe": ((10, 5, 5), (160, 80, 80)),
        "sid": ((80, 80, 80), (800, 240, 240)),
        "asv": ((80, 20, 20), (800, 200, 200)),
        "sd": ((20, 5, 5), (80, 20, 20)),
        "er": ((24, 6, 6), (600, 160, 160)),
        "ic": ((20, 5, 5), (600, 150, 150)),
        "sf": ((20, 5, 5), (600, 150, 150)),
        "se": ((20, 5, 5), (300, 60, 60)),
        "ss": ((20, 5, 5), (300, 60, 60)),
        "sentence_type": ((24, 6, 6), (600, 162, 162)),
        "emphasis": ((24, 6, 6), (600, 162, 162)),
        "irony": ((24, 6, 6), (600, 160, 160)),
        "ood_asr": ((20, 5, 5), (400, 80, 80)),  # per domain, like asr
        "st": ((20, 5, 5), (400, 80, 80)),  # like asr
    },
    "full": {
        "unlabeled": ((400, 20, 20), (20000, 400, 400)),
        "pr": ((100, 20, 20), (4000, 400, 400)),
        "asr": ((100, 20, 20), (4000, 400, 400)),
        "ks": ((300, 40, 40), (12000, 1500, 1500)),
        "qbe": ((40, 10, 10), (1000, 400, 400)),
        "sid": ((200, 200, 200), (8000, 1000, 1000)),
        "asv": ((200, 40, 40), (4000, 800, 800)),
        "sd": ((100, 20, 20), (800, 100, 100)),
        "er": ((60, 20, 20), (4000, 800, 800)),
        "ic": ((80, 20, 20), (4000, 800, 800)),
        "sf": ((80, 20, 20), (4000, 800, 800)),
        "se": ((80, 20, 20), (2000, 400, 400)),
        "ss": ((80, 20, 20), (2000, 400, 400)),
        "sentence_type": ((60, 20, 20), (3600, 900, 900)),
        "emphasis": ((60, 20, 20), (3600, 900, 900)),
        "irony": ((60, 20, 20), (3000, 600, 600)),
        "ood_asr": ((100, 20, 20), (4000, 400, 400)),  # per domain, like asr
        "st": ((100, 20, 20), (4000, 400, 400)),
    },
}


def write_cutset(cuts: Sequence[MonoCut], path: Path) -> None:
    """A CutSet as gzipped JSONL, byte-identical for identical cuts (no timestamp), written atomically."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        for cut in cuts:
            gz.write((json.dumps(cut.to_dict(), ensure_ascii=False) + "\n").encode("utf-8"))
    atomic_write_bytes(path, buffer.getvalue())


def _marker(name: str, preset: str, seed: int) -> dict:
    """What a built subset was made from; a subset whose marker differs (e.g. resized preset) is rebuilt."""
    speakers, counts = PRESETS[preset][name]
    return {"preset": preset, "seed": seed, "sizes": [list(speakers), list(counts)],
            "format_version": FORMAT_VERSION}


def _is_complete(subset_dir: Path, preset: str, seed: int) -> bool:
    marker = subset_dir / _MARKER
    try:
        return json.loads(marker.read_text()) == _marker(subset_dir.name, preset, seed)
    except (OSError, ValueError):
        return False


def load_subset(subset_dir: Path) -> dict[str, CutSet]:
    """The CutSets of one built subset: `train`/`dev`/`test` (qbe: documents, plus `<split>_queries`), then
    each finished out-of-domain test split `test_<domain>`."""
    out = {}
    for split in SPLITS:
        out[split] = CutSet.from_file(subset_dir / f"{split}.jsonl.gz")
        queries = subset_dir / f"{split}_queries.jsonl.gz"
        if queries.exists():
            out[f"{split}_queries"] = CutSet.from_file(queries)
    for domain in DOMAINS:
        split = domain_split(domain)
        if (subset_dir / f"{_MARKER}_{split}").is_file():
            out[split] = CutSet.from_file(subset_dir / f"{split}.jsonl.gz")
    return out


def _domain_marker(name: str, domain: str, preset: str, seed: int) -> dict:
    """What a domain split was made from: its subset's marker plus the domain (and the domains' version)."""
    return {**_marker(name, preset, seed), "domain": domain, "domain_version": DOMAIN_VERSION}


def _domain_complete(subset_dir: Path, domain: str, preset: str, seed: int) -> bool:
    marker = subset_dir / f"{_MARKER}_{domain_split(domain)}"
    try:
        return json.loads(marker.read_text()) == _domain_marker(subset_dir.name, domain, preset, seed)
    except (OSError, ValueError):
        return False


def build_domain(
    name: str, domain: str, output_dir: Path, preset: str, seed: int, runner: SynthesisRunner
) -> None:
    """Build the out-of-domain test split `test_<domain>` of a complete subset (its manifest,
    `audio_<domain>/` and card replaced) and mark it complete last; the subset's own files are not touched."""
    subset_dir, split = output_dir / name, domain_split(domain)
    marker = subset_dir / f"{_MARKER}_{split}"
    marker.unlink(missing_ok=True)
    audio_dir = subset_dir / f"audio_{domain}"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)
    audio_dir.mkdir(parents=True)
    speakers, counts = PRESETS[preset][name]
    index = (SUBSETS + OPT_IN_SUBSETS).index(name)
    # The subset's plan made again from its own stream (no synthesis): its test items and speakers.
    plan: Plan = _PLANNERS[name](np.random.default_rng([seed, index]), subset_dir / "audio", speakers,
                                 counts)
    rng = np.random.default_rng([seed, index, _DOMAIN_STREAM, DOMAINS.index(domain)])
    items = plan_domain(name, domain, rng, plan, audio_dir)
    cuts: list[MonoCut] = []
    failures = 0
    for i, meta in runner.run([item.job for item in items], desc=f"{name}/{split}"):
        if meta is None:
            failures += 1
            continue
        cuts.extend(items[i].to_cuts(meta))
    write_cutset(cuts, subset_dir / f"{split}.jsonl.gz")
    if failures:
        raise OutputError(f"{subset_dir}: {failures} of {len(items)} items of {split} failed to synthesise "
                          "(see the warnings above); not marked complete, run the same command again to "
                          "rebuild it")
    write_domain_card(subset_dir, name, split, preset, seed, cuts)
    verify_subset(subset_dir, {split: len(cuts)})
    atomic_write_text(marker, json.dumps(_domain_marker(name, domain, preset, seed)))


def build_subset(name: str, output_dir: Path, preset: str, seed: int, runner: SynthesisRunner) -> None:
    """Build one subset from scratch (its folder is replaced) and mark it complete last."""
    subset_dir = output_dir / name
    if subset_dir.exists():
        shutil.rmtree(subset_dir)
    audio_dir = subset_dir / "audio"
    audio_dir.mkdir(parents=True)
    speakers, counts = PRESETS[preset][name]
    # Each subset has its own stream, so building a subset alone gives the same result as in the full run.
    rng = np.random.default_rng([seed, (SUBSETS + OPT_IN_SUBSETS).index(name)])
    plan: Plan = _PLANNERS[name](rng, audio_dir, speakers, counts)
    cuts: dict[str, list[MonoCut]] = {}
    failures = 0
    for split in SPLITS:
        items = plan.items[split]
        cuts[split] = []
        for index, meta in runner.run([item.job for item in items], desc=f"{name}/{split}"):
            if meta is None:
                failures += 1
                continue
            cuts[split].extend(items[index].to_cuts(meta))
        if name == "qbe":  # queries and documents are separate sets
            roles = {c.id: c.supervisions[0].custom["role"] for c in cuts[split]}
            write_cutset(
                [c for c in cuts[split] if roles[c.id] == "query"], subset_dir / f"{split}_queries.jsonl.gz"
            )
            write_cutset(
                [c for c in cuts[split] if roles[c.id] == "document"], subset_dir / f"{split}.jsonl.gz"
            )
        else:
            write_cutset(cuts[split], subset_dir / f"{split}.jsonl.gz")
    if failures:
        planned = sum(len(plan.items[split]) for split in SPLITS)
        raise OutputError(f"{subset_dir}: {failures} of {planned} items failed to synthesise (see the warnings "
                          "above); not marked complete, run the same command again to rebuild it")
    if plan.finish is not None:
        plan.finish(subset_dir, cuts)
    write_card(subset_dir, name, preset, seed, cuts, plan.speakers, failures)
    verify_subset(subset_dir, {split: len(cuts[split]) for split in SPLITS})
    atomic_write_text(subset_dir / _MARKER, json.dumps(_marker(name, preset, seed)))


def verify_subset(subset_dir: Path, expected: dict[str, int]) -> None:
    """Raise OutputError unless every split's manifests hold `expected[split]` cuts whose audio files all
    exist and are non-empty: the check that precedes a completion marker."""
    for split, count in expected.items():
        manifests = [subset_dir / f"{split}.jsonl.gz", subset_dir / f"{split}_queries.jsonl.gz"]
        rows = [json.loads(line) for m in manifests if m.is_file() for line in gzip.open(m, "rt") if line.strip()]
        if len(rows) != count:
            raise OutputError(f"{subset_dir}: the {split} manifests hold {len(rows)} of {count} cuts; "
                              "not marked complete, run the same command again to rebuild it")
        for path in (Path(source) for row in rows for source in _audio_sources(row)):
            if not path.is_file() or path.stat().st_size == 0:
                raise OutputError(f"{path}: audio file missing or empty; {subset_dir.name} is not marked "
                                  "complete, run the same command again to rebuild it")


def _audio_sources(manifest: object) -> list[str]:
    """The file paths of every audio source a manifest row names (recordings, clean references, sources)."""
    if isinstance(manifest, dict):
        own = [manifest["source"]] if manifest.get("type") == "file" and "source" in manifest else []
        return own + [s for value in manifest.values() for s in _audio_sources(value)]
    if isinstance(manifest, list):
        return [s for value in manifest for s in _audio_sources(value)]
    return []


def make_synthetic_corpus(
    output_dir: Path,
    preset: str = "tiny",
    seed: int = 0,
    subsets: Sequence[str] | None = None,
    num_workers: int = 2,
    *,
    domains: Sequence[str] = (),
    record_settings: bool = False,
    overwrite: bool = False,
) -> dict[str, dict[str, CutSet]]:
    """Build (or finish) the synthetic corpus under `output_dir`; subsets already complete are skipped.

    `subsets=None` builds `SUBSETS`; the `OPT_IN_SUBSETS` (sentence_type, emphasis, irony, ood_asr, st) only
    when named.
    `domains` (of `domains.DOMAINS`) adds each one's out-of-domain test split `test_<domain>` to every named
    subset that takes it (`domains.DOMAIN_SUBSETS`); finished ones are skipped, and no other file changes.

    The folder is locked for the run. With `record_settings` (the `speechrep synth` command) it also records
    preset and seed, and a later run with others is an OutputError unless `overwrite` empties it first.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic corpus preset {preset!r} (choose from {sorted(PRESETS)})")
    names = list(SUBSETS if subsets is None else subsets)
    known = SUBSETS + OPT_IN_SUBSETS
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown synthetic subset(s) {unknown} (choose from {list(known)})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError(f"workers: expected an integer >= 1, got {num_workers!r}")
    domains = list(dict.fromkeys(domains))
    bad = [d for d in domains if d not in DOMAINS]
    if bad:
        raise ConfigError(f"unknown out-of-domain test split(s) {bad} (choose from {list(DOMAINS)})")
    pairs = [(n, d) for n in names for d in domains if n in DOMAIN_SUBSETS[d]]
    if domains and not pairs:
        takers = sorted({s for d in domains for s in DOMAIN_SUBSETS[d]})
        raise ConfigError(f"--domains {','.join(domains)}: none of the subsets {names} takes them "
                          f"(subsets with out-of-domain test splits: {', '.join(takers)})")
    output_dir = Path(
        output_dir
    ).resolve()  # absolute audio paths: lhotse resolves relative ones from the cwd
    settings = {"preset": preset, "seed": seed} if record_settings else None
    forked_children_release_locks()  # the worker pool must not keep the folder locked after a kill -9
    with OutputFolder(output_dir, "speechrep synth", settings, overwrite), disk_errors(output_dir):
        todo = [n for n in names if not _is_complete(output_dir / n, preset, seed)]
        for name in sorted(set(names) - set(todo), key=names.index):
            log.info("%s: already complete, skipped", name)
        for domain in domains:
            without = [n for n in names if n not in DOMAIN_SUBSETS[domain]]
            if without:
                log.info("%s: no %s split (it is made for %s)", ", ".join(without),
                         domain_split(domain), ", ".join(DOMAIN_SUBSETS[domain]))
        # A rebuilt subset loses its folder, so its domain splits are rebuilt after it.
        todo_domains = [(n, d) for n, d in pairs
                        if n in todo or not _domain_complete(output_dir / n, d, preset, seed)]
        for name, domain in sorted(set(pairs) - set(todo_domains), key=pairs.index):
            log.info("%s/%s: already complete, skipped", name, domain_split(domain))
        if todo or todo_domains:
            with SynthesisRunner(num_workers) as runner:
                for name in todo:
                    log.info("%s: building (%s preset, seed %d)", name, preset, seed)
                    build_subset(name, output_dir, preset, seed, runner)
                for name, domain in todo_domains:
                    log.info("%s/%s: building (%s preset, seed %d)", name, domain_split(domain), preset,
                             seed)
                    build_domain(name, domain, output_dir, preset, seed, runner)
        return {name: load_subset(output_dir / name) for name in names}
