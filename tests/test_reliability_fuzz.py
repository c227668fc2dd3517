"""Bad input for every command and public API gives one line and a documented exit code, never a traceback.

Each CLI case runs `speechrep.cli.main([...])` in-process: exit code 1 (the run failed) or 2 (usage), stderr
ending in one `speechrep CMD: error: ...` line (extract reports bad files in its summary instead), and no
"Traceback"."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechrep.cli import main
from speechrep.errors import SpeechrepError, TrainingError



@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic corpus (ks, unlabeled), bad audio files of every kind, a file, a results folder."""
    from speechrep.data.synth import make_synthetic_corpus

    root = tmp_path_factory.mktemp("fuzz")
    corpus = root / "corpus"
    make_synthetic_corpus(corpus, preset="micro", seed=0, subsets=["ks", "unlabeled"], num_workers=1)
    t = np.arange(16000) / 16000
    good = root / "good.wav"
    sf.write(good, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    empty = root / "empty.wav"
    empty.write_bytes(b"")
    text = root / "text.wav"
    text.write_text("not audio at all, only words")
    truncated = root / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    nan = root / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan] * 4000, np.float32), 16000, subtype="FLOAT")
    rate8k = root / "rate8k.wav"
    sf.write(rate8k, (0.3 * np.sin(2 * np.pi * 220 * t[:8000])).astype(np.float32), 8000)
    a_file = root / "a_file"
    a_file.write_text("x")
    bad_results = root / "bad_results"
    bad_results.mkdir()
    (bad_results / "results.json").write_text("{not json")
    return {"corpus": corpus, "good": good, "empty": empty, "text": text, "truncated": truncated, "nan": nan,
            "rate8k": rate8k, "file": a_file, "bad_results": bad_results, "root": root,
            "missing": root / "missing.wav", "unwritable": a_file / "sub", "proc": Path("/proc/speechrep-out")}


def _run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err


def _assert_one_line_error(argv: list[str], capsys, codes=(1, 2), contains: str | None = None) -> None:
    code, err = _run(argv, capsys)
    assert code in codes, f"{argv}: exit {code}, stderr {err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert last.startswith(f"speechrep {argv[0]}: error: "), err[-2000:]
    if contains is not None:
        assert contains in last, last


def _subst(argv: list[str], files: dict[str, Path]) -> list[str]:
    """`@name` and `@name/rest` stand for the fixture's paths."""
    def path(arg: str) -> str:
        name, _, rest = arg[1:].partition("/")
        return str(files[name] / rest) if rest else str(files[name])

    return [path(a) if a.startswith("@") else a for a in argv]


def _case(argv: str, codes=(1, 2), contains: str | None = None):
    return pytest.param(argv.split(), codes, contains, id=argv)


OUT = "--out @root/out"

CLI_CASES = [
    # synth
    _case("synth --out @file", (1,), "not a folder"),
    _case("synth --out @unwritable", (1,)),
    _case("synth --out @proc", (1,)),
    _case("synth --out @root/s --subsets nope", (2,), "nope"),
    _case("synth --out @root/s --seed -3", (2,), "seed"),
    _case("synth --out @root/s --workers 0", (2,), "workers"),
    _case("synth --out @root/s --workers nan", (2,)),
    _case("synth --out @root/s --preset huge", (2,)),
    # pretrain
    _case("pretrain --method nope --data @corpus --out @root/p", (2,), "nope"),
    _case("pretrain --method apc --data @missing --out @root/p", (2,)),
    _case("pretrain --method apc --data @empty --out @root/p1", (1, 2)),
    _case("pretrain --method apc --data @text --out @root/p2", (1, 2)),
    _case("pretrain --method apc --data @corpus --out @root/p --preset nope", (2,), "nope"),
    _case("pretrain --method apc --data @corpus --out @root/p3 --preset tiny no_such_key=1", (2,), "no_such_key"),
    _case("pretrain --method apc --data @corpus --out @root/p4 --preset tiny train.max_steps=-1", (2,)),
    _case("pretrain --method apc --data @corpus --out @root/p5 --preset tiny train.max_steps=0", (2,)),
    _case("pretrain --method apc --data @corpus --out @root/p6 --preset tiny train.lr=nan", (2,)),
    _case("pretrain --method apc --data @corpus --out @root/p7 --preset tiny train.max_steps=many", (2,)),
    _case("pretrain --method apc --data @corpus --out @file --preset tiny", (1,), "not a folder"),
    _case("pretrain --method apc --data @corpus --out @proc --preset tiny", (1,)),
    # benchmark
    _case(f"benchmark --upstream fbank --tasks nope --corpus @corpus {OUT}", (2,), "nope"),
    _case(f"benchmark --upstream fbank --tasks , --corpus @corpus {OUT}", (2,), "--tasks"),
    _case(f"benchmark --upstream fbank --tasks ks --corpus @missing {OUT}", (2,)),
    _case(f"benchmark --upstream no_such_upstream --tasks ks --corpus @corpus {OUT}", (1, 2)),
    _case(f"benchmark --upstream fbank --tasks ks --corpus @corpus {OUT} --lr-sweep fast", (2,), "--lr-sweep"),
    _case(f"benchmark --upstream fbank --tasks ks --corpus @corpus {OUT} --lr-sweep -1", (2,), "--lr-sweep"),
    _case(f"benchmark --upstream fbank --tasks ks --corpus @corpus {OUT} --lr-sweep nan", (2,), "--lr-sweep"),
    _case(f"benchmark --upstream fbank --tasks ks --corpus @corpus {OUT} --preset nope", (2,)),
    _case(f"benchmark --upstream fbank --tasks ks --corpus @corpus {OUT} --score-references @missing", (1, 2)),
    _case("benchmark --upstream fbank --tasks ks --corpus @corpus --out @file", (1,), "not a folder"),
    # extract
    _case("extract --upstream no_such_upstream --out @root/e @good", (1, 2)),
    _case("extract --upstream fbank --out @file @good", (1,)),
    _case("extract --upstream fbank --out @unwritable @good", (1,)),
    _case("extract --upstream fbank --layers x --out @root/e2 @good", (2,)),
    _case("extract --upstream fbank --layers 99 --out @root/e3 @good", (2,)),
    _case("extract --upstream fbank --device nonsense --out @root/e4 @good", (1, 2)),
    _case("extract --upstream fbank --device cuda:99 --out @root/e5 @good", (1, 2)),
    _case("extract --upstream fbank --max-batch-seconds 0 --out @root/e6 @good", (2,)),
    _case("extract --upstream fbank --max-batch-seconds nan --out @root/e7 @good", (2,)),
    _case("extract --upstream fbank --chunk-seconds -1 --out @root/e8 @good", (2,)),
    _case("extract --upstream fbank --overlap-seconds -1 --out @root/e9 @good", (2,)),
    _case("extract --upstream @root --out @root/e10 @good", (1, 2)),
    # kmeans
    _case("kmeans --features nope_upstream:1 --data @corpus --k 4 --out @root/k1", (1, 2)),
    _case("kmeans --features mfcc --data @missing --k 4 --out @root/k2", (2,)),
    _case("kmeans --features mfcc --data @corpus --k 0 --out @root/k3", (2,)),
    _case("kmeans --features mfcc --data @corpus --k -2 --out @root/k4", (2,)),
    _case("kmeans --features mfcc --data @corpus --k 4 --fit-fraction nan --out @root/k5", (2,)),
    _case("kmeans --features mfcc --data @corpus --k 4 --fit-fraction 0 --out @root/k6", (2,)),
    _case("kmeans --features mfcc --data @corpus --k 4 --stride 0 --out @root/k7", (2,)),
    _case("kmeans --features mfcc --data @corpus --k 4 --max-fit-frames 0 --out @root/k8", (2,)),
    _case("kmeans --features mfcc --data @corpus --k 4 --out @file", (1,)),
    # report
    _case("report @missing", (2,)),
    _case("report @root/corpus", (2,), "no results.json"),
    _case("report @bad_results", (2,), "not valid JSON"),
    _case("report @file", (2,)),
    # prepare
    _case("prepare nope --corpus-dir @root --out @root/pr1", (2,), "nope"),
    _case("prepare librispeech --corpus-dir @missing --out @root/pr2", (2,)),
    _case("prepare librispeech --corpus-dir @file --out @root/pr3", (2,)),
    _case("prepare speech_commands --corpus-dir @root/corpus --out @root/pr4", (2,)),
    _case("prepare speech_commands --corpus-dir @root/corpus --out @file", (1,), "not a folder"),
    # demo
    _case("demo --out @file", (1,), "not a folder"),
    _case("demo --out @root/d no_such_key=1", (2,)),
]


@pytest.mark.parametrize("argv, codes, contains", CLI_CASES)
def test_bad_command_lines_give_one_line_errors(argv: list[str], codes, contains, files, capsys) -> None:
    _assert_one_line_error(_subst(argv, files), capsys, codes, contains)


@pytest.mark.parametrize("bad", ["missing", "empty", "text", "truncated", "nan"])
def test_extract_reports_each_bad_audio_file_and_exits_1(bad: str, files, capsys, tmp_path) -> None:
    code, err = _run(["extract", "--upstream", "fbank", "--out", str(tmp_path / "e"), str(files["good"]),
                      str(files[bad])], capsys)
    assert code == 1 and "Traceback" not in err
    assert files[bad].name in err and "failed 1" in err


def test_extract_resamples_a_file_at_another_rate(files, capsys, tmp_path) -> None:
    code, err = _run(["extract", "--upstream", "fbank", "--out", str(tmp_path / "e"), str(files["rate8k"])], capsys)
    assert code == 0 and "Traceback" not in err


def test_ctrl_c_is_exit_130_with_one_line(monkeypatch, capsys, tmp_path) -> None:
    import speechrep.data.synth as synth

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "make_synthetic_corpus", interrupted)
    code, err = _run(["synth", "--out", str(tmp_path / "s")], capsys)
    assert code == 130 and err.strip() == "speechrep synth: error: interrupted; run the same command again to resume"


@pytest.mark.parametrize("error, code, words", [
    (OSError(28, "No space left on device", "/data/out/x.pt"), 1, "/data/out/x.pt: No space left on device"),
    (PermissionError(13, "Permission denied", "/data/out"), 1, "/data/out: Permission denied"),
    (RuntimeError("Torch not compiled with CUDA enabled"), 1, "device not available"),
    (AssertionError("Torch not compiled with CUDA enabled"), 1, "device not available"),
    (RuntimeError("Expected one of cpu, cuda device type at start of device string: gpu"), 1, "device"),
    (RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried 1 PB"), 1, "out of memory"),
    (SpeechrepError("a\nmultiline\nmessage"), 2, "a multiline message"),
    (TrainingError("non-finite loss or gradient at step 3"), 1, "non-finite loss"),
])
def test_expected_failures_map_to_one_line_and_their_exit_code(error, code, words, monkeypatch, capsys,
                                                                tmp_path) -> None:
    import speechrep.data.synth as synth

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(synth, "make_synthetic_corpus", failing)
    got, err = _run(["synth", "--out", str(tmp_path / "s")], capsys)
    assert got == code and err.count("\n") == 1 and words in err and "Traceback" not in err
    got, err = _run(["-v", "synth", "--out", str(tmp_path / "s")], capsys)
    assert got == code and "Traceback" in err and err.strip().splitlines()[-1].startswith("speechrep synth: error:")
    got, err = _run(["synth", "--out", str(tmp_path / "s"), "--verbose"], capsys)
    assert got == code and "Traceback" in err


def test_safetensors_errors_are_one_line(files, capsys, tmp_path) -> None:
    from safetensors import SafetensorError
    import speechrep.data.synth as synth

    def failing(*args, **kwargs):
        raise SafetensorError("Error while deserializing header: HeaderTooLarge")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synth, "make_synthetic_corpus", failing)
        code, err = _run(["synth", "--out", str(tmp_path / "s")], capsys)
    assert code == 1 and "HeaderTooLarge" in err and err.count("\n") == 1


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path) -> None:
    import speechrep.data.synth as synth

    def buggy(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(synth, "make_synthetic_corpus", buggy)
    with pytest.raises(TypeError):
        main(["synth", "--out", str(tmp_path / "s")])


def test_help_documents_the_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {code} " in out for code in (0, 1, 2, 130)) and "-v shows" in out


# ---------------------------------------------------------------------------------------------------- APIs

@pytest.mark.parametrize("bad", ["missing", "empty", "text", "truncated", "nan"])
def test_load_audio_rejects_bad_files_by_path_and_file_object(bad: str, files) -> None:
    from speechrep.audio import load_audio
    from speechrep.errors import AudioError

    with pytest.raises(AudioError) as caught:
        load_audio(files[bad])
    assert str(files[bad]) in str(caught.value) and "\n" not in str(caught.value)
    if files[bad].is_file():
        with open(files[bad], "rb") as f, pytest.raises(AudioError):
            load_audio(f)


def _export(root: Path) -> Path:
    from speechrep.upstream import load_upstream
    from speechrep.upstream.loading import export_upstream

    out = root / "export"
    if not out.is_dir():
        torch.manual_seed(0)
        export_upstream(load_upstream("apc_tiny"), out, {"note": "fuzz"})
    return out


def _broken_export(files, tmp_path: Path, how: str) -> Path:
    import shutil

    target = tmp_path / how
    shutil.copytree(_export(files["root"]), target)
    weights, config = target / "model.safetensors", target / "config.json"
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif how == "garbage weights":
        weights.write_bytes(b"\xff" * 64)
    elif how == "config is a list":
        config.write_text("[1, 2]")
    elif how == "config is null":
        config.write_text("null")
    elif how == "config not json":
        config.write_text("{family: apc")
    elif how == "no weights":
        weights.unlink()
    return target


@pytest.mark.parametrize("how", ["truncated weights", "garbage weights", "config is a list", "config is null",
                                 "config not json", "no weights"])
def test_load_upstream_rejects_a_broken_export_with_one_line(how: str, files, tmp_path) -> None:
    from speechrep.upstream import load_upstream

    target = _broken_export(files, tmp_path, how)
    with pytest.raises(SpeechrepError) as error:
        load_upstream(target)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["/no/such/dir", ""])
def test_load_upstream_rejects_missing_paths(name: str) -> None:
    from speechrep.upstream import load_upstream

    with pytest.raises(SpeechrepError):
        load_upstream(name)


def test_load_upstream_rejects_unknown_names_as_the_registry_does() -> None:
    from speechrep.upstream import load_upstream

    # The API's documented contract (timm's): an unknown name is a ValueError naming close matches; the
    # commands turn it into one line naming their flag (see the extract/benchmark cases above).
    with pytest.raises(ValueError, match="unknown upstream 'hubert_tny'.*hubert"):
        load_upstream("hubert_tny")


@pytest.mark.parametrize("signal", [torch.full((1, 16000), math.nan), torch.full((1, 16000), math.inf),
                                    torch.zeros(1, 0), torch.zeros(16000)])
def test_hear_functions_reject_bad_audio(signal: torch.Tensor) -> None:
    from speechrep import hear

    model = hear.load_model(upstream="apc_tiny")
    if signal.ndim == 2 and signal.numel() and torch.isfinite(signal).all():
        pytest.fail("not a bad signal")  # the parametrisation holds only bad ones
    with pytest.raises(SpeechrepError) as error:
        hear.get_scene_embeddings(signal, model)
    assert "\n" not in str(error.value)
