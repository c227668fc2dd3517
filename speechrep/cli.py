"""The `speechrep` command: argument parsing only; every subcommand calls a library function."""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from speechrep.errors import AudioError, CheckpointError, SpeechrepError


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: `speechrep <cmd>: error: ...`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES_HELP = """exit codes:
  0    success
  1    the run failed: unreadable audio or checkpoint, an output folder in use, unwritable or full,
       a device that is not available, a diverged training (NaN loss), an operating-system error
  2    usage: a bad flag, config value or input path (the command as typed cannot run)
  130  interrupted (Ctrl-C); run the same command again to resume
errors are one line on stderr (`speechrep COMMAND: error: ...`); -v shows their traceback"""

# Each subcommand: (name, help, add_arguments(parser), run(args) -> exit code). Imports stay inside the
# functions so that `speechrep --help` is instant and one broken extra does not break every command.
_Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: list[_Command] = []


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register `run(args) -> int` as the subcommand `name`."""

    def decorator(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS.append((name, help, add_arguments, run))
        return run

    return decorator


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = _Parser(prog="speechrep", description="Self-supervised speech representation learning: pre-train, "
                     "load, benchmark and apply SSL upstreams.", epilog=EXIT_CODES_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_text, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        # SUPPRESS: without the flag after COMMAND, the value of `speechrep -v COMMAND` stays
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="debug logging and tracebacks of errors")
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `speechrep` console script; returns the exit code (see EXIT_CODES_HELP)."""
    from speechrep.storage import forked_children_release_locks

    forked_children_release_locks()  # no worker process keeps an output folder locked after its run dies
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except (Exception, KeyboardInterrupt) as e:
        failure = expected_failure(e)
        if failure is None:
            raise  # a bug: its traceback is what a report needs
        code, message = failure
        if args.verbose:
            traceback.print_exc()
        print(f"speechrep {args.command}: error: {message}", file=sys.stderr)
        return code


def expected_failure(error: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for an error a user or the machine causes; None for a bug."""
    from speechrep.errors import ConfigError, TrainingError
    from speechrep.storage import OutputError

    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted; run the same command again to resume"
    if isinstance(error, SpeechrepError):
        # Output, audio and checkpoint errors are failures of the run; the rest (config values, missing
        # manifests, corpus layouts) mean that the command as typed cannot run.
        failed = (isinstance(error, (OutputError, AudioError, CheckpointError, TrainingError))
                  and not isinstance(error, ConfigError))
        return (EXIT_FAILURE if failed else EXIT_USAGE), _one_line(str(error))
    if isinstance(error, OSError):
        reason = error.strerror or str(error) or type(error).__name__
        return EXIT_FAILURE, _one_line(reason if error.filename is None else f"{error.filename}: {reason}")
    if type(error).__name__ == "SafetensorError":  # safetensors' Rust error class is not importable by name
        return EXIT_FAILURE, _one_line(f"cannot read a safetensors file ({error})")
    if isinstance(error, (RuntimeError, AssertionError)) and any(m in str(error) for m in _DEVICE_ERRORS):
        return EXIT_FAILURE, _one_line(f"device not available ({error})")
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "can't allocate memory" in str(error)):
        return EXIT_FAILURE, _one_line(f"out of memory ({error})")
    return None


# torch's words for a device that is missing, mistyped or full (RuntimeError or AssertionError)
_DEVICE_ERRORS = ("Torch not compiled with CUDA", "CUDA is not available", "NVIDIA driver", "device string",
                  "Invalid device", "CUDA out of memory", "No CUDA GPUs are available", "invalid device")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------- subcommands
# Keep each block short: parse, call the library, print. Add new commands below in the same shape.


def _prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("corpus", help="corpus name: librispeech, speech_commands, voxceleb1, iemocap, "
                   "fluent_speech_commands, libri2mix, voicebank_demand, quesst14, snips, vcc2020, "
                   "common_voice, sbcsae, covost2")
    p.add_argument("--corpus-dir", type=Path, required=True, help="the corpus in its published layout")
    p.add_argument("--lang", default=None,
                   help="common_voice: the language folder of the release to read, e.g. es, zh-CN, ar "
                   "(writes OUT/ood_asr/<lang>/)")
    p.add_argument("--out", type=Path, required=True, help="writes OUT/<subset>/{train,dev,test}.jsonl.gz")


@command("prepare", "turn a real corpus into speechrep manifests", _prepare_arguments)
def _prepare(args: argparse.Namespace) -> int:
    from speechrep.data.recipes import prepare_corpus
    from speechrep.storage import ensure_output_dir

    ensure_output_dir(args.out)
    manifests = prepare_corpus(args.corpus, args.corpus_dir, args.out, lang=args.lang)
    for subset, splits in manifests.items():
        for split, cuts in splits.items():
            hours = sum(c.duration for c in cuts) / 3600
            print(f"{args.out / subset / split}.jsonl.gz: {len(cuts)} cuts, {hours:.2f} h")
    return 0


def _upstream_task_arguments(p: argparse.ArgumentParser, out_help: str) -> None:
    """The flags `benchmark` and `probe` share: which upstreams on which tasks of which corpus, and --out."""
    p.add_argument("--upstream", action="append", required=True, metavar="NAME_OR_DIR",
                   help="hub name, exported directory or LABEL=PATH (repeatable); NAME@random = untrained "
                   "control; fbank_global = fbank with train-split statistics")
    p.add_argument("--tasks", required=True,
                   help="comma-separated task names, e.g. pr,ks,sid (see `speechrep list tasks`)")
    p.add_argument("--corpus", type=Path, required=True,
                   help="corpus folder (CORPUS/<subset>/<split>.jsonl.gz) or a `speechrep shard` output")
    p.add_argument("--out", type=Path, required=True, help=out_help)


def _benchmark_arguments(p: argparse.ArgumentParser) -> None:
    _upstream_task_arguments(p, "runs, feature cache, leaderboard.md, results.json")
    p.add_argument("--preset", default=None, help="config preset, e.g. tiny (see `speechrep list presets`)")
    p.add_argument("--tuning", default=None, metavar="NAME",
                   help="how tasks adapt the upstream (default: frozen; see `speechrep list tunings`)")
    p.add_argument("--finetune", action="store_true",
                   help="alias of --tuning full: train the upstream too (lr: upstream_lr=...)")
    p.add_argument("--lr-sweep", default=None, metavar="LR,LR,...",
                   help="train each LR, keep the best on dev")
    p.add_argument("--random-init", action="store_true", help="every upstream with random weights")
    p.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=True,
                   help="cache frozen upstream features on disk (default: on)")
    p.add_argument("--features", type=Path, action="append", default=[], metavar="DIR",
                   help="features written by `speechrep extract --layers all` (repeatable); each feeds the "
                   "upstream whose weights it was extracted with, instead of the cache in OUT")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out made with another corpus, preset, tuning, LR sweep or overrides, "
                   "or other upstream weights (default: such a folder is an error; the same command resumes)")
    p.add_argument("--score-references", type=Path, default=None, metavar="YAML",
                   help="task: {baseline, topline} for the score (default: the fbank row and the best value)")
    p.add_argument("--test-conditions", default=None, metavar="SPEC,SPEC,...",
                   help="also test every trained head under these distortions, e.g. clean,noise:snr=5,"
                   "reverb:rt60=0.8 (kinds: clean noise babble reverb telephone clip codec speed pitch "
                   "dropout; see docs/robustness.md); selection stays on the clean dev split")
    p.add_argument("--train-conditions", default=None, metavar="SPEC,SPEC,...",
                   help="distorted training: each training cut's audio under one of these conditions, drawn "
                   "per cut and epoch (seeded), e.g. clean,noise:snr=5; training runs live (no feature "
                   "cache); dev selection stays clean")
    p.add_argument("--boundaries", default="", metavar="FILE",
                   help="segment boundaries per cut (JSON lines {\"id\": ..., \"boundaries\": [seconds]}) "
                   "for upstreams that pool between them (sequence compression, see "
                   "docs/sequence_compression.md); default: each cut's phone alignment")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides; TASK.key=value for one task; tuning.key=value an option of the "
                   "--tuning strategy (e.g. tuning.rank=4); train_fraction=0.1 trains on a seeded 10%% of "
                   "each train split")


@command("benchmark", "SUPERB-style benchmark of upstreams on downstream tasks", _benchmark_arguments)
def _benchmark(args: argparse.Namespace) -> int:
    from speechrep.bench.leaderboard import write_summary
    from speechrep.bench.score import load_references
    from speechrep.downstream.runner import BenchmarkConfig, benchmark
    from speechrep.errors import ConfigError
    from speechrep.train import finish_distributed, is_main_process
    from speechrep.tuning import with_options

    try:
        lrs = [float(x) for x in args.lr_sweep.split(",")] if args.lr_sweep else None
    except ValueError:
        raise ConfigError(f"--lr-sweep {args.lr_sweep!r}: expected comma-separated numbers") from None
    if args.finetune and args.tuning not in (None, "full"):
        raise ConfigError(f"--finetune is --tuning full; it contradicts --tuning {args.tuning}")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    tuning, overrides = with_options("full" if args.finetune else args.tuning or "frozen", args.overrides)
    from speechrep.audio.conditions import split_condition_list

    conditions, train_conditions = [], []
    if args.test_conditions is not None:
        conditions = split_condition_list(args.test_conditions)
        if not conditions:
            raise ConfigError("--test-conditions: none given (e.g. --test-conditions clean,noise:snr=5)")
    if args.train_conditions is not None:
        train_conditions = split_condition_list(args.train_conditions)
        if not train_conditions:
            raise ConfigError("--train-conditions: none given (e.g. --train-conditions clean,noise:snr=5)")
    cfg = BenchmarkConfig(upstreams=args.upstream, tasks=tasks, corpus=args.corpus, out=args.out,
                          tuning=tuning, lr_sweep=lrs,
                          random_init=args.random_init, feature_cache=args.feature_cache, features=args.features,
                          preset=args.preset, overrides=overrides, overwrite=args.overwrite,
                          test_conditions=conditions, train_conditions=train_conditions,
                          boundaries=args.boundaries)
    # read before training, so a bad file fails in a second, not after the benchmark
    refs = load_references(args.score_references) if args.score_references else None
    tables: list[str] = []  # the leaderboard is written while the run still holds --out
    benchmark(cfg, summarise=lambda rows: tables.append(write_summary(rows, args.out, references=refs)))
    if is_main_process():
        print(tables[0], end="")
    finish_distributed()
    return 0


def _probe_arguments(p: argparse.ArgumentParser) -> None:
    _upstream_task_arguments(p, "runs per hidden state, feature cache, probe.json (`speechrep report OUT` "
                                "shows it)")
    p.add_argument("--layers", default="all",
                   help="hidden states probed one by one: 'all' (default) or indices, e.g. 0,4,8")
    p.add_argument("--preset", default=None, help="config preset, e.g. tiny (see `speechrep list presets`)")
    p.add_argument("--similarity", action=argparse.BooleanOptionalAction, default=True,
                   help="linear CKA, SVCCA and PWCCA of each hidden state with log-mel, phone, word and "
                   "speaker identity and pitch (default: on)")
    p.add_argument("--similarity-subset", default="pr", metavar="SUBSET",
                   help="similarity frames come from CORPUS/SUBSET/dev.jsonl.gz, whose cuts carry phone and "
                   "word alignments (default: pr)")
    p.add_argument("--max-frames", type=int, default=4000,
                   help="similarity on a seeded sample of at most this many frames (default: 4000; CCA needs "
                   "many more frames than the layer is wide, see docs/layer_analysis.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the similarity frame sample")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out made with another corpus, preset, overrides or CKA sample, "
                   "or other upstream weights (default: such a folder is an error; the same command resumes)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="task config overrides; TASK.key=value for one task (the probe sets `layers` itself)")


@command("probe", "per-layer probing: a task on each hidden state, the weighted sum and feature-integration "
         "setups; CKA/SVCCA/PWCCA of each layer with log-mel, phones, words, speakers, pitch",
         _probe_arguments)
def _probe(args: argparse.Namespace) -> int:
    from speechrep.analysis.probe import ProbeConfig, format_probe, probe

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    cfg = ProbeConfig(upstreams=args.upstream, tasks=tasks, corpus=args.corpus, out=args.out,
                      layers=args.layers, preset=args.preset, overrides=args.overrides,
                      similarity=args.similarity, similarity_subset=args.similarity_subset,
                      max_frames=args.max_frames, seed=args.seed, overwrite=args.overwrite)
    print(format_probe(probe(cfg)), end="")
    return 0


def _analyze_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("analysis", choices=["invariance"],
                   help="invariance: per layer, NMI of k-means clusters of frames with the distortion "
                   "condition and with the phone, over utterances each rendered under every condition")
    p.add_argument("--upstream", action="append", required=True, metavar="NAME_OR_DIR",
                   help="hub name, exported directory or LABEL=PATH (repeatable); NAME@random = untrained "
                   "control")
    p.add_argument("--corpus", type=Path, required=True,
                   help="corpus folder (CORPUS/<subset>/<split>.jsonl.gz)")
    p.add_argument("--subset", default="pr",
                   help="its cuts (phone alignments for the phone NMI; default: pr)")
    p.add_argument("--split", default="dev", help="split of the subset (default: dev)")
    p.add_argument("--conditions", default="clean,noise:snr=0,reverb:rt60=0.8", metavar="SPEC,SPEC,...",
                   help="conditions every cut is rendered under (default: clean,noise:snr=0,reverb:rt60=0.8; "
                   "see docs/robustness.md; not speed)")
    p.add_argument("--k", type=int, default=50, help="k-means clusters per hidden state (default: 50)")
    p.add_argument("--max-frames", type=int, default=2000,
                   help="seeded sample of frame positions, each under every condition (default: 2000)")
    p.add_argument("--max-cuts", type=int, default=200,
                   help="seeded sample of cuts of the split (default: 200)")
    p.add_argument("--projection-layer", type=int, default=-1,
                   help="hidden state drawn as a 2-D t-SNE of its frames (default: -1, the last)")
    p.add_argument("--projection-points", type=int, default=800,
                   help="frames in that picture, a seeded sample across conditions (default: 800; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples, k-means and chance levels")
    p.add_argument("--device", default="cpu", help="where upstreams run: cpu, cuda, ...")
    p.add_argument("--out", type=Path, required=True,
                   help="JSON file to write (`speechrep report` shows RESULTS_DIR/invariance.json)")


@command("analyze", "representation analyses: `invariance` (per-layer NMI of k-means clusters with the "
         "distortion condition and the phone)", _analyze_arguments)
def _analyze(args: argparse.Namespace) -> int:
    from speechrep.analysis.invariance import format_invariance, run_invariance

    result = run_invariance(args.upstream, args.corpus, args.conditions, args.out, subset=args.subset,
                            split=args.split, k=args.k, max_frames=args.max_frames, max_cuts=args.max_cuts,
                            seed=args.seed, device=args.device, projection_layer=args.projection_layer,
                            projection_points=args.projection_points)
    print(format_invariance(result), end="")
    print(f"invariance: {args.out}")
    return 0


def _pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="pre-training method (see `speechrep list methods`)")
    p.add_argument("--data", type=Path, required=True,
                   help="a corpus directory (its `unlabeled` subset) or a lhotse manifest of unlabeled audio")
    p.add_argument("--out", type=Path, required=True, help="run directory; the upstream is exported to OUT/upstream")
    p.add_argument("--preset", default=None, help="e.g. tiny (see `speechrep list presets`)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out made with another method, preset, data or overrides "
                   "(default: such a folder is an error; the same command again resumes)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_steps=200")


@command("pretrain", "pre-train an SSL upstream on unlabeled speech (resumable, torchrun-ready)", _pretrain_arguments)
def _pretrain(args: argparse.Namespace) -> int:
    from speechrep.pretrain import run_method
    from speechrep.train import finish_distributed, is_main_process

    out = run_method(args.method, args.data, args.out, preset=args.preset, overrides=args.overrides,
                     overwrite=args.overwrite)
    if is_main_process():
        print(f"exported upstream: {out}  (load with speechrep.load_upstream({str(out)!r}))")
    finish_distributed()
    return 0



def _kmeans_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", default=None, metavar="mfcc|fbank|UPSTREAM[:LAYER]",
                   help="hand-crafted features, or a hub name / exported upstream and a hidden-state index "
                   "(not with --apply: the fitted ones)")
    p.add_argument("--data", type=Path, required=True,
                   help="a corpus directory (its `unlabeled` train and dev) or a manifest")
    p.add_argument("--k", type=int, default=None, help="number of clusters (not with --apply)")
    p.add_argument("--out", type=Path, required=True, help="writes kmeans.json, centroids.npy, <split>.npz")
    p.add_argument("--stride", type=int, default=None, help="samples per label (hand-crafted features; default 320)")
    p.add_argument("--fit-fraction", type=float, default=1.0, help="share of train utterances to fit on")
    p.add_argument("--max-fit-frames", type=int, default=1_000_000, help="frames sampled to fit at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where upstream features run")
    p.add_argument("--max-duration", type=float, default=120.0, help="seconds of audio per feature batch")
    step = p.add_mutually_exclusive_group()
    step.add_argument("--fit-only", action="store_true", help="fit, save the dictionary; label with --apply")
    step.add_argument("--apply", action="store_true",
                      help="label every cut with the dictionary fitted in OUT (`--fit-only`); with --shard "
                      "or under torchrun one part each, merged by the last to finish")
    step.add_argument("--merge", action="store_true", help="only merge the finished --apply parts in OUT")
    step.add_argument("--unit-boundaries", type=Path, default=None, metavar="FILE",
                      help="with the dictionary fitted in OUT, write the starts of runs of repeated units of "
                      "every cut of --data (a manifest, or every subset's splits of a corpus) as a boundaries "
                      "file for unit-guided sequence compression (docs/sequence_compression.md)")
    p.add_argument("--shard", default=None, metavar="I/N|slurm",
                   help="with --apply: label part I of N (0-based) into OUT/parts/ (`slurm`: array task)")


@command("kmeans", "k-means targets for HuBERT-style pre-training: fit on a sample, label train and dev",
         _kmeans_arguments)
def _kmeans(args: argparse.Namespace) -> int:
    from speechrep.errors import ConfigError
    from speechrep.parts import resolve_part
    from speechrep.pretrain.kmeans import apply_kmeans, merge_kmeans_parts, run_kmeans, write_unit_boundaries

    if args.unit_boundaries is not None:
        manifests = sorted(args.data.glob("*/*.jsonl.gz")) if args.data.is_dir() else [args.data]
        if not manifests:
            raise ConfigError(f"--data {args.data}: no manifest (<subset>/<split>.jsonl.gz) here")
        count = write_unit_boundaries(args.out, manifests, args.unit_boundaries, args.max_duration,
                                      args.device)
        print(f"{args.unit_boundaries}: unit boundaries of {count} cuts from {len(manifests)} manifest(s)")
        return 0
    part = resolve_part(args.shard)
    if part is not None and not args.apply:
        raise ConfigError("--shard (or torchrun) splits the labelling: use it with --apply, after --fit-only")
    if args.merge:
        report = merge_kmeans_parts(args.out, args.data)
    elif args.apply:
        report = apply_kmeans(args.out, args.data, part, args.max_duration, args.device)
        if not report.get("splits"):
            print(f"{args.out}: labelled part {report['part']}; the last part to finish merges")
            return 0
    else:
        if args.features is None or args.k is None:
            raise ConfigError("kmeans needs --features and --k (except with --apply or --merge)")
        report = run_kmeans(args.features, args.data, args.k, args.out, stride=args.stride,
                            fit_fraction=args.fit_fraction, max_fit_frames=args.max_fit_frames,
                            seed=args.seed, max_duration=args.max_duration, device=args.device,
                            fit_only=args.fit_only)
    if args.fit_only:
        print(f"{args.out}: k={report['k']} fitted on {report['fit_frames']} frames of {report['describe']}; "
              "label with --apply")
        return 0
    print(f"{args.out}: k={report['k']} on {report['describe']}, label every {report['stride']} samples, "
          f"{report['used_clusters']}/{report['k']} clusters used")
    for split, stats in report["splits"].items():
        quality = stats.get("label_quality")
        line = f"  {split}: {stats['cuts']} cuts, {stats['frames']} frames, {stats['used_clusters']} clusters used"
        if quality:
            line += (f"; phone purity {quality['phone_purity']:.3f}, "
                     f"cluster purity {quality['cluster_purity']:.3f}, PNMI {quality['pnmi']:.3f}")
        print(line)
    return 0


def _synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=("tiny", "small", "full"), default="tiny",
                   help="corpus size: tiny (tests, <1 min), small (demo, minutes), full (tens of hours)")
    p.add_argument("--out", type=Path, required=True, help="output directory (re-running skips finished subsets)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same corpus")
    p.add_argument("--subsets", default=None,
                   help="comma-separated subset names, e.g. ks,sid (default: every SUPERB subset; the "
                   "prosodic sentence_type, emphasis and irony only when named; with --hear: none unless "
                   "named)")
    p.add_argument("--hear", action="store_true",
                   help="write synthetic tasks in the HEAR layout to OUT/hear/<task>/ (for `speechrep "
                   "hear-eval --tasks OUT/hear`); alone it builds no mini-SUPERB subset, add --subsets for "
                   "both")
    p.add_argument("--hear-tasks", default=None, metavar="TASKS",
                   help="comma-separated HEAR tasks (implies --hear; default: speech_commands,lang_id,"
                   "speaker_count,pitch,events)")
    p.add_argument("--domains", default=None, metavar="DOMAINS",
                   help="also write out-of-domain test splits <subset>/test_<domain> of the subsets that "
                   "take them (ks, ic, er, pr, asr; sid all but unseen): comma-separated of unseen, accented,"
                   " fast, slow, spontaneous (docs/robustness.md); existing files are not changed")
    p.add_argument("--workers", type=int, default=2, help="synthesis processes")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out made with another preset or seed (default: an error)")


def _comma_names(text: str | None) -> list[str] | None:
    """`a, b,c` → [a, b, c]; None or empty → None (the default)."""
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


@command("synth", "build the synthetic mini-SUPERB corpus (eSpeak NG speech, every task) and, with --hear, "
         "synthetic tasks in the HEAR layout", _synth_arguments)
def _synth(args: argparse.Namespace) -> int:
    from speechrep.data.synth import make_synthetic_corpus

    hear = args.hear or args.hear_tasks is not None
    if hear and args.domains and not args.subsets:
        from speechrep.errors import ConfigError

        raise ConfigError("--domains: out-of-domain test splits belong to mini-SUPERB subsets, which "
                          "--hear alone does not build; name them with --subsets (e.g. --subsets ks,pr)")
    if not hear or args.subsets:
        corpus = make_synthetic_corpus(args.out, preset=args.preset, seed=args.seed,
                                       subsets=_comma_names(args.subsets), num_workers=args.workers,
                                       domains=_comma_names(args.domains) or (),
                                       record_settings=True, overwrite=args.overwrite)
        for name, splits in corpus.items():
            print(f"{name}: " + ", ".join(f"{split} {len(cuts)}" for split, cuts in splits.items()))
    if hear:
        import json

        from speechrep.data.synth.hear_tasks import make_hear_tasks

        tasks = make_hear_tasks(args.out / "hear", preset=args.preset, seed=args.seed,
                                tasks=_comma_names(args.hear_tasks), num_workers=args.workers,
                                overwrite=args.overwrite)
        for name, folder in tasks.items():
            counts = {split: len(json.loads((folder / f"{split}.json").read_text()))
                      for split in ("train", "valid", "test")}
            print(f"hear/{name}: " + ", ".join(f"{split} {n}" for split, n in counts.items()))
    return 0


def _extract_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT", type=Path,
                   help="audio files, folders (searched recursively) or lhotse manifests")
    p.add_argument("--upstream", default=None,
                   help="registered name (see `speechrep list upstreams`) or an exported/HF/fairseq model")
    p.add_argument("--checkpoint", type=Path, default=None, help="weights for a registered name")
    p.add_argument("--layers", default="all", help="'all' or comma-separated hidden-state indices, e.g. 6,12")
    p.add_argument("--out", type=Path, required=True,
                   help="a feature store folder (re-running resumes; the benchmark can read it)")
    p.add_argument("--max-batch-seconds", type=float, default=120.0, help="padded audio seconds per batch")
    p.add_argument("--chunk-seconds", type=float, default=30.0, help="longer files run in windows this long")
    p.add_argument("--overlap-seconds", type=float, default=5.0, help="context kept on each side of a window")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="fp16: stored fp16 like the benchmark's cache; bf16: autocast, stored bf16")
    p.add_argument("--shard-mb", type=float, default=64.0,
                   help="shard size in MB: a kill loses at most the shard being filled (default 64)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out written with another upstream, checkpoint, layers or precision")
    p.add_argument("--shard", default=None, metavar="I/N|slurm",
                   help="do part I of N (0-based) into OUT/parts/, e.g. one task of a SLURM job array "
                   "(`slurm`: this task's SLURM_ARRAY_TASK_ID/COUNT); under torchrun each rank also takes a "
                   "part; the last part to finish merges all into one store in OUT")
    p.add_argument("--merge", action="store_true",
                   help="only move what finished parts wrote into OUT's store (needs no INPUT or --upstream)")


@command("extract", "write an upstream's hidden states for audio files to safetensors shards (resumable)",
         _extract_arguments)
def _extract(args: argparse.Namespace) -> int:
    from speechrep.errors import ConfigError
    from speechrep.parts import resolve_part
    from speechrep.upstream.extract import extract_features, load_upstream_flag, merge_parts
    from speechrep.upstream.extract import resolve_device_flag as device_flag

    if args.merge:
        merged, unfinished = merge_parts(args.out)
        print(f"{args.out}: merged {len(merged)} part folder(s)"
              + (f"; not finished: {', '.join(unfinished)}" if unfinished else ""))
        return 0
    if not args.inputs or args.upstream is None:
        raise ConfigError("extract needs INPUT(s) and --upstream (or --merge alone)")
    part = resolve_part(args.shard)
    device = device_flag(args.device)
    upstream = load_upstream_flag(args.upstream, args.checkpoint).to(device)
    summary = extract_features(upstream, args.inputs, args.out, args.layers,
                               max_batch_seconds=args.max_batch_seconds, chunk_seconds=args.chunk_seconds,
                               overlap_seconds=args.overlap_seconds, precision=args.precision,
                               max_shard_mb=args.shard_mb, name=_absolute(args.upstream),
                               checkpoint=args.checkpoint and _absolute(args.checkpoint),
                               overwrite=args.overwrite, part=part)
    print(summary, file=sys.stderr if summary.failures else sys.stdout)
    return 1 if summary.failures else 0


def _shard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("corpus", type=Path, metavar="CORPUS",
                   help="a corpus directory (from `speechrep synth` or `speechrep prepare`)")
    p.add_argument("--out", type=Path, required=True,
                   help="the Shar directory: OUT/<subset>/<split>/ shards and OUT/shar_index.json "
                   "(re-running writes only what is missing)")
    p.add_argument("--subsets", default=None,
                   help="comma-separated subset names, e.g. unlabeled (default: every subset)")
    p.add_argument("--shard-size", type=int, default=1000, help="cuts per shard (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the one shuffle of each train split")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True,
                   help="shuffle train splits before sharding (default: on; off keeps the manifest's order)")


@command("shard", "write a corpus as lhotse Shar shards that pre-training streams (per rank, resumable)",
         _shard_arguments)
def _shard(args: argparse.Namespace) -> int:
    from speechrep.data.shar import write_shar
    from speechrep.storage import OutputFolder, disk_errors

    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()] if args.subsets else None
    with OutputFolder(args.out, "speechrep shard"), disk_errors(args.out):
        index = write_shar(args.corpus, args.out, subsets, shard_size=args.shard_size, seed=args.seed,
                           shuffle=args.shuffle)
    for key, entry in index["splits"].items():
        seconds = sum(s["seconds"] for s in entry["shards"])
        failed = f", {len(entry['failed'])} unreadable (listed in the index)" if entry["failed"] else ""
        print(f"{key}: {len(entry['shards'])} shards, {sum(s['num_cuts'] for s in entry['shards'])} cuts, "
              f"{seconds / 3600:.3g} h{failed}")
    return 0


def _absolute(name_or_path: str | Path) -> str:
    """An existing path made absolute (what the store records, whatever the working folder); a name as is."""
    return str(Path(name_or_path).resolve()) if Path(name_or_path).exists() else str(name_or_path)


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--preset", default=None, help="synthetic corpus preset (default: small, from configs/demo.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of configs/demo.yaml")


@command("demo", "the main job: synthesise a corpus, pre-train SSL models, benchmark them against FBANK, report",
         _demo_arguments)
def _demo(args: argparse.Namespace) -> int:
    from speechrep.bench.demo import run_demo
    from speechrep.storage import ensure_output_dir

    ensure_output_dir(args.out)
    table = run_demo(args.out, args.preset, args.overrides)
    print(table, end="")
    print(f"report: {args.out / 'report.html'}")
    return 0


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dir", type=Path, metavar="RESULTS_DIR",
                   help="a benchmark --out folder, or a demo folder (with bench/ and pretrain/)")
    p.add_argument("more", type=Path, nargs="*", metavar="BENCH_DIR",
                   help="more benchmark --out folders whose rows join the table (e.g. one per --tuning "
                   "strategy: each upstream then gets one line per strategy)")
    p.add_argument("--out", type=Path, default=None, help="HTML file to write (default: RESULTS_DIR/report.html)")


@command("report", "a static HTML page of a benchmark or demo: leaderboard, score, layer weights, curves, "
         "provenance", _report_arguments)
def _report(args: argparse.Namespace) -> int:
    from speechrep.bench.report import write_report

    print(f"report: {write_report(args.results_dir, args.out, args.more)}")
    return 0


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=LISTS, default=None, metavar="{" + ",".join(LISTS) + "}",
                   help="what to list (default: all of them)")
    p.add_argument("pattern", nargs="?", default="*", help="only names matching this wildcard, e.g. hubert*")


LISTS = ("upstreams", "methods", "tasks", "presets", "tunings")


@command("list", "what can be named on the command line: upstreams, pre-training methods, tasks, presets, "
         "tunings", _list_arguments)
def _list(args: argparse.Namespace) -> int:
    from fnmatch import fnmatchcase

    from speechrep.config import list_presets
    from speechrep.downstream.tasks import list_tasks
    from speechrep.pretrain import list_methods
    from speechrep.tuning import list_tunings
    from speechrep.upstream.registry import list_upstreams

    def presets() -> list[str]:  # a preset covers some tasks (downstream) or methods (pretrain)
        from speechrep.compress.series import METHODS, compress_presets

        return [f"{kind}/{name}: {', '.join(names)}" for kind in ("downstream", "pretrain")
                for name, names in list_presets(kind).items()] + \
            [f"compress/{name}: {', '.join(METHODS)}" for name in compress_presets()]

    listings = {"upstreams": list_upstreams, "methods": list_methods, "tasks": list_tasks, "presets": presets,
                "tunings": list_tunings}
    for what in [args.what] if args.what else LISTS:
        names = [n for n in listings[what]() if fnmatchcase(n.split(":")[0], args.pattern)]
        if args.what:  # one kind: one name a line, for scripts
            print("\n".join(names))
        else:
            print(f"{what}:\n" + "".join(f"  {n}\n" for n in names), end="")
    return 0


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("upstream", metavar="UPSTREAM", help="registered name or an exported/HF/fairseq model")
    p.add_argument("--checkpoint", type=Path, default=None, help="weights for a registered name")
    p.add_argument("--seconds", type=float, nargs="+", default=[1.0, 10.0], metavar="S",
                   help="utterance lengths to profile (default: 1 10)")
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes per length (median)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the numbers as JSON")


@command("profile", "parameters, MACs per audio second (by module kind and layer), wall time and peak memory "
         "of an upstream", _profile_arguments)
def _profile(args: argparse.Namespace) -> int:
    import json

    from speechrep.compress.profile import format_profile, profile_upstream
    from speechrep.storage import atomic_write_text
    from speechrep.upstream.extract import load_upstream_flag, resolve_device_flag

    device = resolve_device_flag(args.device)
    upstream = load_upstream_flag(args.upstream, args.checkpoint, flag="UPSTREAM").to(device)
    report = profile_upstream(upstream, args.seconds, args.repeats, name=args.upstream)
    print(format_profile(report), end="")
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    return 0


def _keep_fractions(text: str) -> list[float]:
    """"0.75,0.5" → [0.75, 0.5]; the range is checked by the library (one ConfigError line)."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None


def _compress_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, choices=["heads", "ffn", "prune", "skip", "distill"],
                   help="heads: attention heads ranked across layers by the L1 norm of their weights "
                   "(importance=gradient: of the retraining loss's gradients), removed; ffn: each layer's FFN "
                   "units by weight magnitude, removed; prune: global magnitude pruning of the transformer's "
                   "linear weights (zeros, no speed-up); skip: the attention of the most diagonal layers "
                   "replaced by the identity; distill: shallow students of round(keep x layers) layers")
    p.add_argument("--upstream", required=True, metavar="NAME_OR_DIR",
                   help="registered name (random weights, seeded from the name) or an exported/HF/fairseq "
                   "model")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="DIR/keep_<f>/ per fraction (an upstream `load_upstream` reads), DIR/train/keep_<f>/ "
                   "its training run, DIR/compress.json")
    p.add_argument("--data", type=Path, default=None, metavar="CORPUS",
                   help="unlabeled audio (a corpus directory's `unlabeled` subset or a manifest) for "
                   "retraining (steps > 0), gradient importance, attention diagonality and distillation")
    p.add_argument("--keep", type=_keep_fractions, default=None, metavar="F,F,...",
                   help="fractions of the original kept, each in (0, 1]: of the heads, FFN units, weights "
                   "(density), attention layers or layers (default: the config's, 0.75,0.5,0.25)")
    p.add_argument("--preset", default=None,
                   help="configs/compress/<preset>.yaml over compress.yaml, e.g. tiny or demo")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a DIR made with another method, upstream or config (default: such a "
                   "folder is an error; the same command resumes, skipping exported steps)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. steps=200 importance=gradient train.lr=2e-4")


@command("compress", "compress an upstream step by step (heads, FFN units, weights, skip-ahead or shallow "
         "students), retraining between steps; exports one smaller upstream per keep fraction with its "
         "parameters and MACs", _compress_arguments)
def _compress(args: argparse.Namespace) -> int:
    from speechrep.compress.series import compress_config, compress_series

    overrides = list(args.overrides)
    if args.keep is not None:
        overrides.append("keep=[" + ",".join(f"{k:g}" for k in args.keep) + "]")
    cfg = compress_config(args.preset, overrides)
    report = compress_series(args.method, args.upstream, args.out, args.data, cfg, args.overwrite)
    for step in [dict(report["original"], keep=1.0, folder="(original)")] + report["steps"]:
        extra = (f"  density {step['density']:.3f}, {step['nonzero_params'] / 1e6:.3f} M nonzero"
                 if "density" in step else "")
        print(f"keep {step['keep']:<5g} {step['folder']:<12} layers {len(step['heads']):>2}  "
              f"heads {sum(step['heads']):>4}  ffn {sum(step['ffn']):>6}  "
              f"{step['params'] / 1e6:8.3f} M params  {step['macs_per_second'] / 1e6:9.1f} MMACs per audio second"
              f"{extra}")
    return 0


def _merge_lora_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upstream", required=True, metavar="NAME_OR_DIR",
                   help="the upstream the run was tuned on, as given to `speechrep benchmark --upstream`")
    p.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                   help="the run's checkpoint, e.g. BENCH/<upstream>/<task>/checkpoints/best.pt")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="the merged upstream (config.json + model.safetensors; `load_upstream` reads it)")


@command("merge-lora", "fold a LoRA-tuned benchmark run into its upstream's weights and export a plain upstream",
         _merge_lora_arguments)
def _merge_lora(args: argparse.Namespace) -> int:
    from speechrep.downstream.merge_lora import merged_lora_upstream
    from speechrep.downstream.runner import load_upstream_module, parse_upstream
    from speechrep.upstream import export_upstream

    upstream = load_upstream_module(parse_upstream(args.upstream))
    merged = merged_lora_upstream(upstream, args.checkpoint)
    out = export_upstream(merged, args.out, provenance={"merged_lora": str(args.checkpoint.resolve()),
                                                        "base_upstream": args.upstream})
    print(f"{out}: {args.upstream} with the LoRA update of {args.checkpoint} merged")
    return 0


def _hear_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upstream", required=True, metavar="NAME_OR_PATH",
                   help="registry name or model path (NAME@random: its weights re-initialised, the untrained "
                   "control); `majority`: the trivial baseline (train-set class shares as constant scores; no "
                   "events for event tasks)")
    p.add_argument("--tasks", type=Path, required=True, metavar="DIR",
                   help="a HEAR task folder (task_metadata.json, labelvocabulary.csv, <split>.json, "
                        "<rate>/<split>/*.wav) or a folder of them")
    p.add_argument("--out", type=Path, default=Path("hear_out"),
                   help="OUT/<task>/results.json and cached embeddings (default: hear_out)")
    p.add_argument("--layer", type=int, default=None, help="hidden state to embed (default: mean of all)")
    p.add_argument("--grid", choices=("hear", "small"), default="hear",
                   help="predictor grid: hear (HEAR's 16 points) or small (1 hidden layer of 256, 2 LRs)")
    p.add_argument("--grid-points", type=int, default=None, help="draw this many grid points (default: all)")
    p.add_argument("--max-epochs", type=int, default=500, help="epochs per grid point before early stopping")
    p.add_argument("--seed", type=int, default=0)


@command("hear-eval", "the HEAR evaluation protocol on tasks in the HEAR layout: embed (cached), MLP grid "
         "chosen on validation, k-fold where the task says, accuracy/mAP/event F/segment ER",
         _hear_eval_arguments)
def _hear_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from speechrep.bench import hear_eval as he

    small = {"hidden_layers": [1], "hidden_dim": [256], "lr": [1e-3, 1e-2]}
    grid = he.HEAR_GRID if args.grid == "hear" else small
    cfg = he.HearEvalConfig(grid=dict(grid), grid_points=args.grid_points, seed=args.seed,
                            base=replace(he.PredictorConfig(), max_epochs=args.max_epochs))
    print(he.results_table(he.evaluate_tasks(args.upstream, args.tasks, args.out, args.layer, cfg)), end="")
    return 0


# ----------------------------------------------------------------------------- synthesis and voice conversion

def _vocoder_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    train = actions.add_parser("train", help="train a vocoder on a corpus (the same command resumes)")
    train.add_argument("--corpus", type=Path, required=True,
                       help="corpus folder; reads CORPUS/<subset>/{train,dev}.jsonl.gz (subset=...)")
    train.add_argument("--out", type=Path, required=True, help="the run folder")
    train.add_argument("--preset", default=None, help="config preset (tiny, small)")
    train.add_argument("--overwrite", action="store_true",
                       help="start over in an --out made with other settings (default: the same command "
                       "resumes, other settings are an error)")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, e.g. features=RUN/upstream:2 kind=mel_gl discriminator=true")
    synth = actions.add_parser("synthesize", help="copy-synthesis of audio files")
    synth.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio files")
    synth.add_argument("--vocoder", required=True, metavar="RUN|griffin-lim",
                       help="a trained vocoder run, or griffin-lim (log-mel through Griffin-Lim, untrained)")
    synth.add_argument("--out", type=Path, required=True, help="a folder for <input stem>.wav")


@command("vocoder", "train a vocoder on features (log-mel or an upstream layer), or copy-synthesise audio "
         "files", _vocoder_arguments)
def _vocoder(args: argparse.Namespace) -> int:
    if args.action == "train":
        from speechrep.apps.vocoder_train import train_vocoder, vocoder_config

        cfg = vocoder_config(args.preset, args.overrides)
        results = train_vocoder(cfg, args.corpus, args.out, overwrite=args.overwrite,
                                settings={"preset": args.preset, "overrides": args.overrides})
        print(f"{args.out}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in results.items()))
        return 0
    from speechrep.apps.vocoder_train import copy_synthesize

    for path in copy_synthesize(args.vocoder, args.inputs, args.out):
        print(path)
    return 0


def _vc_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocoder", required=True, metavar="RUN",
                   help="a vocoder run trained on the features kNN-VC matches (its upstream and layer)")
    p.add_argument("--upstream", default=None, help="default: the vocoder's; if given, must be the vocoder's")
    p.add_argument("--layer", type=int, default=None, help="hidden state (default: the vocoder's)")
    p.add_argument("--source", type=Path, default=None, help="one source utterance")
    p.add_argument("--reference", type=Path, action="append", default=[],
                   help="target speaker's reference speech (repeatable): the matching set")
    p.add_argument("--pairs", type=Path, default=None,
                   help="batch: lines source<TAB>target_speaker[<TAB>output_name] (with --speakers)")
    p.add_argument("--speakers", type=Path, default=None, help="batch: lines speaker<TAB>reference_path")
    p.add_argument("--out", type=Path, required=True,
                   help="the converted wave (one source) or a folder (--pairs)")
    p.add_argument("--k", type=int, default=4, help="neighbours averaged per frame (default 4)")
    p.add_argument("--lambda", dest="lam", type=float, default=1.0,
                   help="y = λ·kNN average + (1 − λ)·source frame (default 1: plain kNN-VC)")
    p.add_argument("--overwrite", action="store_true", help="--pairs: start over in an --out made otherwise")


@command("vc", "kNN-VC voice conversion: each source frame becomes the mean of its k nearest frames of the "
         "target's reference speech", _vc_arguments)
def _vc(args: argparse.Namespace) -> int:
    from speechrep.apps.convert import VoiceConverter, convert_pairs
    from speechrep.apps.vocoder_train import load_vocoder
    from speechrep.audio import save_audio
    from speechrep.audio.synthesis import SAMPLE_RATE
    from speechrep.errors import ConfigError

    vocoder, extractor = load_vocoder(args.vocoder)
    if args.upstream is not None and _absolute(args.upstream) != _absolute(extractor.name):
        raise ConfigError(f"--upstream {args.upstream}: the vocoder {args.vocoder} was trained on "
                          f"{extractor.name}")
    if args.layer is not None and args.layer != extractor.layer:
        raise ConfigError(f"--layer {args.layer}: the vocoder {args.vocoder} was trained on "
                          f"{extractor.layer}")
    converter = VoiceConverter(extractor, vocoder)
    if args.pairs is not None:
        if args.speakers is None or args.source is not None or args.reference:
            raise ConfigError("--pairs goes with --speakers, not with --source/--reference")
        summary = convert_pairs(converter, args.pairs, args.speakers, args.out, args.k, args.lam,
                                args.overwrite, vocoder=_absolute(args.vocoder))
        print(f"{args.out}: {summary}", file=sys.stderr if summary.failures else sys.stdout)
        return 1 if summary.failures else 0
    if args.source is None or not args.reference:
        raise ConfigError("vc needs --source and at least one --reference (or --pairs with --speakers)")
    wave = converter.convert(args.source, converter.matching_set(args.reference), args.k, args.lam)
    save_audio(args.out, wave.numpy(), SAMPLE_RATE)
    print(args.out)
    return 0


def _vc_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", type=Path, required=True,
                   help="tab-separated, with a header: converted, and any of target_speaker, source_speaker, "
                   "reference (for MCD), phones (space-separated, for PER)")
    p.add_argument("--speakers", type=Path, default=None,
                   help="lines speaker<TAB>reference_path: the enrolment speech of the speakers items name")
    p.add_argument("--corpus", type=Path, default=None,
                   help="the corpus the PR and ASV runs were trained on (their vocabulary, dev trials)")
    p.add_argument("--pr-run", type=Path, default=None,
                   help="a finished benchmark pr run (BENCH/UPSTREAM/pr)")
    p.add_argument("--pr-upstream", default="fbank", help="the upstream the pr run was trained on")
    p.add_argument("--asv-run", type=Path, default=None, help="a finished benchmark asv run")
    p.add_argument("--asv-upstream", default="fbank", help="the upstream the asv run was trained on")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")


@command("vc-eval", "judge converted or synthesised speech: MCD, PER of a PR model, ASV accept rates against "
         "target and source", _vc_eval_arguments)
def _vc_eval(args: argparse.Namespace) -> int:
    import json

    from speechrep.apps.evaluate import TrainedTask, evaluate_items, read_items, read_speakers
    from speechrep.errors import ConfigError
    from speechrep.storage import atomic_write_json

    if (args.pr_run or args.asv_run) and args.corpus is None:
        raise ConfigError("--pr-run/--asv-run need --corpus (the corpus they were trained on)")
    items = read_items(args.items)
    speakers = read_speakers(args.speakers) if args.speakers else None
    pr = TrainedTask("pr", args.pr_run, args.pr_upstream, args.corpus) if args.pr_run else None
    asv = TrainedTask("asv", args.asv_run, args.asv_upstream, args.corpus) if args.asv_run else None
    results = evaluate_items(items, speakers, pr, asv)
    if args.out is not None:
        atomic_write_json(args.out, results)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
