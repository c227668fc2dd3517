"""`extract_features` and `speechrep extract`: the upstream's features, bad files skipped, re-runs resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from speechrep import load_upstream
from speechrep.audio.io import load_audio, save_audio
from speechrep.cli import main
from speechrep.errors import ConfigError
from speechrep.storage import SETTINGS_NAME, OutputLock
from speechrep.upstream.extract import extract_features, load_features, read_index
from speechrep.upstream.loading import export_upstream

DURATIONS = {"a": 1.0, "b": 0.6, "sub/c": 1.7}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three short wavs (one in a subfolder), a text file, and one corrupt .wav."""
    root = tmp_path_factory.mktemp("corpus")
    generator = torch.Generator().manual_seed(0)
    for utt_id, seconds in DURATIONS.items():
        samples = 0.2 * torch.randn(int(16000 * seconds), generator=generator)
        save_audio(root / f"{utt_id}.wav", samples, 16000)
    (root / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    (root / "notes.txt").write_text("not audio, not picked up")
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HuBERT exported to a directory, so the CLI and the test use the same weights."""
    torch.manual_seed(0)
    model = load_upstream("hubert_tiny", dropout=0.0, attention_dropout=0.0)
    return export_upstream(model, tmp_path_factory.mktemp("model") / "hubert_tiny", {"test": True})


def _reference(model: torch.nn.Module, path: Path) -> list[torch.Tensor]:
    wav, _ = load_audio(path)
    with torch.inference_mode():
        return [h[0] for h in model.eval()(wav[None], torch.tensor([wav.shape[0]])).hidden_states]


def test_cli_writes_the_good_files_reports_the_bad_one_and_resumes(
    corpus: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "feats"
    argv = ["extract", "--upstream", str(exported), "--layers", "0,2", "--out", str(out), str(corpus)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "wrote 3" in err and "failed 1" in err and "bad.wav" in err

    index = read_index(out)
    assert sorted(index) == sorted(DURATIONS)
    model = load_upstream(exported)
    for utt_id in DURATIONS:
        reference = _reference(model, corpus / f"{utt_id}.wav")
        features = load_features(out, utt_id)
        assert sorted(features) == [0, 2] and index[utt_id]["frames"] == reference[0].shape[0]
        assert index[utt_id]["stride"] == 320
        # batched with padding, the features equal the utterance run alone
        torch.testing.assert_close(features[0], reference[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(features[2], reference[2], atol=1e-5, rtol=1e-5)

    shards = sorted(p.name for p in out.glob("shard-*"))
    assert main(argv) == 1  # the bad file still fails; nothing else is redone
    err = capsys.readouterr().err
    assert "wrote 0, skipped 3" in err and "bad.wav" in err
    assert sorted(p.name for p in out.glob("shard-*")) == shards
    assert len(read_index(out)) == 3


def test_cli_refuses_other_settings_in_the_same_directory(
    corpus: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "feats"
    assert main(["extract", "--upstream", str(exported), "--layers", "1", "--out", str(out),
                 str(corpus / "a.wav")]) == 0
    assert main(["extract", "--upstream", str(exported), "--layers", "2", "--out", str(out),
                 str(corpus / "a.wav")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "made with other settings" in err[0] and "layers: [1] -> [2]" in err[0]
    assert main(["extract", "--upstream", str(exported), "--layers", "7", "--out", str(tmp_path / "x"),
                 str(corpus / "a.wav")]) == 2
    assert "layers: [7] out of range" in capsys.readouterr().err


def test_a_killed_run_leaves_nothing_that_breaks_the_next(
    corpus: Path, exported: Path, tmp_path: Path
) -> None:
    model = load_upstream(exported)
    out = tmp_path / "feats"
    extract_features(model, [corpus / "a.wav"], out, layers=[2], progress=False)
    # what a kill can leave: a shard never listed, a half-written temporary file, a listing whose shard is gone
    save_file({"b/2": torch.zeros(3, 32)}, str(out / "shard-0000000000000009.safetensors"))
    (out / ".tmp-abc-shard-0000000000000010.safetensors").write_bytes(b"partial")
    (out / "shard-0000000000000011.json").write_text('[{"key": "sub/c", "frames": 3}]')
    summary = extract_features(model, [corpus], out, layers=[2], progress=False)
    assert (summary.written, summary.skipped, len(summary.failures)) == (2, 1, 1)
    assert sorted(p.name for p in out.iterdir() if "0000000000" in p.name) == []
    torch.testing.assert_close(load_features(out, "b")[2], _reference(model, corpus / "b.wav")[2],
                               atol=1e-5, rtol=1e-5)


def test_long_files_are_chunked_and_equal_the_full_pass_for_a_frame_local_upstream(
    corpus: Path, tmp_path: Path
) -> None:
    model = load_upstream("fbank_raw")
    summary = extract_features(model, [corpus / "sub"], tmp_path, chunk_seconds=0.5, overlap_seconds=0.1,
                               progress=False)
    assert summary.written == 1
    features = load_features(tmp_path, "c")[0]
    reference = _reference(model, corpus / "sub" / "c.wav")[0]
    assert features.shape == reference.shape == ((27200 - 400) // 160 + 1, 80)
    torch.testing.assert_close(features, reference, atol=1e-4, rtol=1e-5)


def test_manifest_input_uses_cut_ids_and_bf16_is_stored_as_bf16(corpus: Path, tmp_path: Path) -> None:
    from lhotse import CutSet, Recording, RecordingSet

    recordings = RecordingSet.from_recordings(
        Recording.from_file(corpus / f"{name}.wav", recording_id=f"rec-{name}") for name in ("a", "b")
    )
    manifest = tmp_path / "cuts.jsonl.gz"
    CutSet.from_manifests(recordings=recordings).to_file(manifest)
    model = load_upstream("fbank_raw")
    summary = extract_features(model, [manifest], tmp_path / "feats", precision="bf16", progress=False)
    assert summary.written == 2 and not summary.failures
    entries = read_index(tmp_path / "feats")
    assert sorted(entries) == ["rec-a-0", "rec-b-1"]  # lhotse's cut ids
    features = load_features(tmp_path / "feats", "rec-a-0")[0]
    assert features.dtype == torch.bfloat16 and features.shape[0] == (16000 - 400) // 160 + 1
    reference = _reference(model, corpus / "a.wav")[0]
    torch.testing.assert_close(features.float(), reference, atol=0.1, rtol=0.02)  # bf16 rounding only
    # another manifest reusing a cut id for other audio is not taken for the stored one
    other = CutSet.from_manifests(recordings=RecordingSet.from_recordings(
        [Recording.from_file(corpus / "sub" / "c.wav", recording_id="rec-a")]))
    other = other.modify_ids(lambda _: "rec-a-0")
    other.to_file(tmp_path / "other.jsonl.gz")
    with pytest.raises(ConfigError, match="'rec-a-0' of .* is stored from another cut"):
        extract_features(model, [tmp_path / "other.jsonl.gz"], tmp_path / "feats", precision="bf16",
                         progress=False)


def test_same_utterance_id_from_two_inputs_is_refused(corpus: Path, tmp_path: Path) -> None:
    copy = tmp_path / "other"
    copy.mkdir()
    (copy / "a.wav").write_bytes((corpus / "a.wav").read_bytes())
    with pytest.raises(ConfigError, match="utterance id 'a' comes from both"):
        extract_features(load_upstream("fbank_raw"), [corpus / "a.wav", copy], tmp_path / "feats")
    assert json.loads((tmp_path / "feats" / SETTINGS_NAME).read_text())["layers"] == [0]


# ------------------------------------------------------------------------------------- reliability (issue 22)

def test_a_second_run_on_a_held_folder_fails_with_one_line(
    corpus: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "feats"
    with OutputLock(out, "speechrep extract (the first run)"):
        assert main(["extract", "--upstream", str(exported), "--out", str(out), str(corpus / "a.wav")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by speechrep extract (the first run)" in err[0]
    assert read_index(out) == {}
    assert main(["extract", "--upstream", str(exported), "--out", str(out), str(corpus / "a.wav")]) == 0


def test_another_upstream_is_refused_and_overwrite_starts_over(
    corpus: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    torch.manual_seed(1)
    other = export_upstream(load_upstream("hubert_tiny", dropout=0.0, attention_dropout=0.0),
                            tmp_path / "other", {"test": "other seed"})
    out = tmp_path / "feats"
    argv = ["--layers", "1", "--out", str(out), str(corpus / "a.wav")]
    assert main(["extract", "--upstream", str(exported), *argv]) == 0
    capsys.readouterr()
    assert main(["extract", "--upstream", str(other), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fingerprint:" in err[0] and "upstream:" in err[0] and "--overwrite" in err[0]
    assert main(["extract", "--upstream", str(other), "--overwrite", *argv]) == 0
    assert "wrote 1, skipped 0" in capsys.readouterr().out
    torch.testing.assert_close(load_features(out, "a")[1], _reference(load_upstream(other), corpus / "a.wav")[1],
                               atol=1e-5, rtol=1e-5)
    assert main(["extract", "--upstream", str(other), "--precision", "bf16", *argv]) == 1
    assert "precision:" in capsys.readouterr().err


def test_shard_mb_bounds_every_shard(corpus: Path, exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "feats"
    assert main(["extract", "--upstream", str(exported), "--shard-mb", "0.004", "--max-batch-seconds", "1",
                 "--out", str(out), str(corpus)]) == 1  # bad.wav
    index = read_index(out)
    assert sorted(index) == sorted(DURATIONS)
    per_utterance = {key: sum(t.numel() * t.element_size() for t in load_features(out, key).values())
                     for key in index}
    shards = {entry["shard"] for entry in index.values()}
    assert len(shards) == 3  # 4 KiB: every utterance (>= 8 KiB of fp32) fills a shard by itself
    small = tmp_path / "one"
    extract_features(load_upstream(exported), [corpus], small, max_shard_mb=1.0, progress=False)
    assert len({entry["shard"] for entry in read_index(small).values()}) == 1
    assert min(per_utterance.values()) > 0.004 * 2**20


def test_unknown_upstream_and_devices_are_one_line_errors(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = ["extract", "--out", str(tmp_path / "feats"), str(corpus / "a.wav")]
    cases = [(["--upstream", "no_such_upstream"], "--upstream no_such_upstream: unknown upstream"),
             (["--upstream", "fbank_raw", "--device", "banana"], "--device banana: not a device"),
             (["--upstream", "fbank_raw", "--shard-mb", "0"], "--shard-mb 0.0: must be a finite number > 0"),
             (["--upstream", "fbank_raw", "--max-batch-seconds", "nan"], "--max-batch-seconds nan")]
    if not torch.cuda.is_available():
        cases.append((["--upstream", "fbank_raw", "--device", "cuda"], "--device cuda: no CUDA device"))
    for flags, message in cases:
        assert main(base + flags) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("speechrep extract: error:") and message in err[0], err
    (tmp_path / "file").write_text("not a folder")
    assert main(["extract", "--upstream", "fbank_raw", "--out", str(tmp_path / "file"), str(corpus / "a.wav")]) == 1
    assert "exists and is not a folder" in capsys.readouterr().err


def test_a_full_disk_stops_with_one_line_keeps_the_index_valid_and_resumes(
    corpus: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from speechrep.upstream import feature_store

    written = []

    def save_until_full(tensors: dict, path: str) -> None:
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        real_save(tensors, path)

    real_save = feature_store.save_file
    monkeypatch.setattr(feature_store, "save_file", save_until_full)
    out = tmp_path / "feats"
    argv = ["extract", "--upstream", str(exported), "--shard-mb", "0.001", "--max-batch-seconds", "1",
            "--out", str(out), str(corpus)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("speechrep extract: error:") and "disk full" in err[-1]
    assert "Traceback" not in "\n".join(err)
    index = read_index(out)
    assert len(index) == 1 and not list(out.glob(".tmp-*"))
    for key in index:
        assert load_features(out, key)[0].shape[0] == index[key]["frames"]
    monkeypatch.setattr(feature_store, "save_file", real_save)
    assert main(argv) == 1  # bad.wav
    assert "wrote 2, skipped 1" in capsys.readouterr().err
    assert sorted(read_index(out)) == sorted(DURATIONS)


def test_a_killed_extract_resumes_to_the_features_of_a_clean_run(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "many"
    generator = torch.Generator().manual_seed(1)
    for i in range(150):
        save_audio(root / f"u{i:03d}.wav", 0.2 * torch.randn(4000 + 40 * i, generator=generator), 16000)
    out = tmp_path / "feats"
    argv = ["extract", "--upstream", "fbank_raw", "--shard-mb", "0.0001", "--max-batch-seconds", "0.3",
            "--out", str(out), str(root)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "speechrep.cli", *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(out.glob("shard-*.json"))) < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed mid-run, not finished
    done = len(read_index(out))
    assert 5 <= done < 150

    assert main(argv) == 0
    index = read_index(out)
    assert len(index) == 150 and len(list(out.glob("shard-*.safetensors"))) == len(list(out.glob("shard-*.json")))
    clean = tmp_path / "clean"
    summary = extract_features(load_upstream("fbank_raw"), [root], clean, progress=False)
    assert summary.written == 150
    for key in index:
        torch.testing.assert_close(load_features(out, key)[0], load_features(clean, key)[0], rtol=0, atol=0)


def test_an_out_of_the_old_format_is_refused_not_cleaned(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "feats"
    out.mkdir()
    save_file({"a/0": torch.zeros(3, 80)}, str(out / "shard-00000.safetensors"))
    (out / "index.jsonl").write_text('{"id": "a", "shard": "shard-00000.safetensors"}\n')
    argv = ["extract", "--upstream", "fbank_raw", "--out", str(out), str(corpus / "a.wav")]
    assert main(argv) == 1
    assert "written by an older speechrep extract (index.jsonl)" in capsys.readouterr().err
    assert (out / "shard-00000.safetensors").is_file()
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "index.jsonl").exists() and sorted(read_index(out)) == ["a"]


def test_symlinked_folders_are_followed_and_loops_reported(tmp_path: Path) -> None:
    from speechrep.upstream.extract import collect_utterances

    real = tmp_path / "elsewhere"
    save_audio(real / "b.wav", torch.full((1600,), 0.1), 16000)
    corpus = tmp_path / "corpus"
    save_audio(corpus / "a.wav", torch.full((1600,), 0.1), 16000)
    (corpus / "linked").symlink_to(real, target_is_directory=True)
    (corpus / "loop").symlink_to(corpus, target_is_directory=True)
    (corpus / "gone.wav").symlink_to(tmp_path / "missing.wav")
    found, failures = collect_utterances([corpus])
    assert sorted(u.id for u in found) == ["a", "linked/b"]
    reasons = " ".join(reason for _, reason in failures)
    assert "already visited" in reasons and "broken symlink" in reasons
