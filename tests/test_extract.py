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
from speechrep.storage import SETTINGS_NAME
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


def test_same_utterance_id_from_two_inputs_is_refused(corpus: Path, tmp_path: Path) -> None:
    copy = tmp_path / "other"
    copy.mkdir()
    (copy / "a.wav").write_bytes((corpus / "a.wav").read_bytes())
    with pytest.raises(ConfigError, match="utterance id 'a' comes from both"):
        extract_features(load_upstream("fbank_raw"), [corpus / "a.wav", copy], tmp_path / "feats")
    assert json.loads((tmp_path / "feats" / SETTINGS_NAME).read_text())["layers"] == [0]
