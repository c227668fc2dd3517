"""Each real-corpus recipe reads a tiny tree, written here in its published layout, into manifests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from speechrep.data.recipes import RECIPES, CorpusLayoutError, prepare_corpus

SR = 16000


def write_wav(path: Path, seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Write `seconds` of low-level noise as 16-bit PCM and return the samples as read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.random.default_rng(seed).uniform(-0.1, 0.1, int(round(seconds * sr))).astype(np.float32)
    sf.write(path, audio, sr, subtype="PCM_16")
    return sf.read(path, dtype="float32")[0]


def sup(cut):
    """The one supervision of a whole-utterance cut."""
    assert len(cut.supervisions) == 1
    return cut.supervisions[0]


def labels(cuts: CutSet, key: str) -> dict[str, object]:
    """cut id -> custom[key]."""
    return {c.id: sup(c).custom[key] for c in cuts}


# ------------------------------------------------------------------------------------------- Speech Commands
def build_speech_commands(root: Path) -> None:
    """Two commands and one other word, 3 speakers, a 10 s background noise file, the official lists."""
    files = {
        "yes/aaaa1111_nohash_0.wav": 1.0,
        "yes/bbbb2222_nohash_0.wav": 0.9,
        "no/aaaa1111_nohash_1.wav": 1.0,
        "no/cccc3333_nohash_0.wav": 1.0,
        "bed/bbbb2222_nohash_0.wav": 0.8,
        "bed/cccc3333_nohash_0.wav": 1.0,
    }
    for i, (rel, dur) in enumerate(files.items()):
        write_wav(root / rel, dur, seed=i)
    write_wav(root / "_background_noise_" / "white_noise.wav", 10.0, seed=9)
    (root / "validation_list.txt").write_text("yes/bbbb2222_nohash_0.wav\nbed/bbbb2222_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/cccc3333_nohash_0.wav\nbed/cccc3333_nohash_0.wav\n")


def test_speech_commands(tmp_path: Path) -> None:
    build_speech_commands(tmp_path / "sc")
    out = prepare_corpus("speech_commands", tmp_path / "sc", tmp_path / "out")
    ks = {s: CutSet.from_file(tmp_path / "out" / "ks" / f"{s}.jsonl.gz") for s in ("train", "dev", "test")}
    assert labels(ks["train"], "keyword") == {
        "yes_aaaa1111_nohash_0": "yes",
        "no_aaaa1111_nohash_1": "no",
        **{f"_silence__white_noise_{k:04d}": "_silence_" for k in range(8)},
    }
    assert labels(ks["dev"], "keyword") == {
        "yes_bbbb2222_nohash_0": "yes",
        "bed_bbbb2222_nohash_0": "_unknown_",
        "_silence__white_noise_0008": "_silence_",
    }
    assert labels(ks["test"], "keyword") == {
        "no_cccc3333_nohash_0": "no",
        "bed_cccc3333_nohash_0": "_unknown_",
        "_silence__white_noise_0009": "_silence_",
    }
    dev = {c.id: c for c in ks["dev"]}
    assert sup(dev["bed_bbbb2222_nohash_0"]).speaker == "bbbb2222"
    assert sup(dev["bed_bbbb2222_nohash_0"]).text == "bed"
    assert dev["yes_bbbb2222_nohash_0"].duration == pytest.approx(0.9)
    # a silence slice is second 8 of the noise file, read at the right offset
    noise = sf.read(tmp_path / "sc" / "_background_noise_" / "white_noise.wav", dtype="float32")[0]
    np.testing.assert_allclose(
        dev["_silence__white_noise_0008"].load_audio()[0], noise[8 * SR : 9 * SR], atol=1e-6
    )
    assert len(out["ks"]["train"]) == 10


def test_speech_commands_missing_list(tmp_path: Path) -> None:
    build_speech_commands(tmp_path / "sc")
    (tmp_path / "sc" / "testing_list.txt").unlink()
    with pytest.raises(CorpusLayoutError, match="testing_list.txt"):
        prepare_corpus("speech_commands", tmp_path / "sc", tmp_path / "out")


def test_speech_commands_skips_bad_files(tmp_path: Path) -> None:
    build_speech_commands(tmp_path / "sc")
    (tmp_path / "sc" / "yes" / "aaaa1111_nohash_0.wav").write_bytes(b"not audio")
    (tmp_path / "sc" / "no" / "cccc3333_nohash_0.wav").unlink()  # listed in testing_list.txt
    out = prepare_corpus("speech_commands", tmp_path / "sc", tmp_path / "out")
    assert "yes_aaaa1111_nohash_0" not in {c.id for c in out["ks"]["train"]}
    assert {c.id for c in out["ks"]["test"]} == {"bed_cccc3333_nohash_0", "_silence__white_noise_0009"}
    report = (tmp_path / "out" / "skipped_speech_commands.txt").read_text().splitlines()
    assert len(report) == 2
    assert report[0].endswith("no/cccc3333_nohash_0.wav: listed in the split lists, missing")
    assert "yes/aaaa1111_nohash_0.wav: cannot read audio" in report[1]


def test_rerun_keeps_the_written_manifests(tmp_path: Path) -> None:
    build_speech_commands(tmp_path / "sc")
    prepare_corpus("speech_commands", tmp_path / "sc", tmp_path / "out")
    (tmp_path / "sc" / "validation_list.txt").unlink()  # would fail if the recipe ran again
    again = prepare_corpus("speech_commands", tmp_path / "sc", tmp_path / "out")
    assert len(again["ks"]["dev"]) == 3


# ------------------------------------------------------------------------------------------------ VoxCeleb1
def build_voxceleb1(root: Path) -> None:
    """Two identified speakers (iden_split), two in the verification trials, one more in the ASV pool."""
    rels = [
        "id10001/vidA/00001.wav",
        "id10001/vidA/00002.wav",
        "id10001/vidB/00001.wav",
        "id10002/vidC/00001.wav",
        "id10002/vidC/00002.wav",
        "id10002/vidD/00001.wav",
        "id10270/vidE/00001.wav",
        "id10270/vidF/00001.wav",
        "id10271/vidG/00001.wav",
    ]
    for i, rel in enumerate(rels):
        write_wav(root / "wav" / rel, 0.3 + 0.1 * i, seed=i)
    (root / "iden_split.txt").write_text(
        "1 id10001/vidA/00001.wav\n2 id10001/vidA/00002.wav\n3 id10001/vidB/00001.wav\n"
        "1 id10002/vidC/00001.wav\n1 id10002/vidC/00002.wav\n3 id10002/vidD/00001.wav\n"
    )
    (root / "veri_test2.txt").write_text(
        "1 id10270/vidE/00001.wav id10270/vidF/00001.wav\n0 id10270/vidE/00001.wav id10271/vidG/00001.wav\n"
    )


def test_voxceleb1(tmp_path: Path) -> None:
    build_voxceleb1(tmp_path / "vox")
    out = prepare_corpus("voxceleb1", tmp_path / "vox", tmp_path / "out")
    sid = out["sid"]
    assert sorted(c.id for c in sid["train"]) == [
        "id10001-vidA-00001",
        "id10002-vidC-00001",
        "id10002-vidC-00002",
    ]
    assert [c.id for c in sid["dev"]] == ["id10001-vidA-00002"]
    assert {c.id: sup(c).speaker for c in sid["test"]} == {
        "id10001-vidB-00001": "id10001",
        "id10002-vidD-00001": "id10002",
    }
    assert next(iter(sid["dev"])).duration == pytest.approx(0.4)
    asv = {s: CutSet.from_file(tmp_path / "out" / "asv" / f"{s}.jsonl.gz") for s in ("train", "dev", "test")}
    assert sorted(c.id for c in asv["test"]) == [
        "id10270-vidE-00001",
        "id10270-vidF-00001",
        "id10271-vidG-00001",
    ]
    pool = {sup(c).speaker for s in ("train", "dev") for c in asv[s]}
    assert pool == {"id10001", "id10002"} and len(asv["dev"]) > 0
    assert not {sup(c).speaker for c in asv["train"]} & {sup(c).speaker for c in asv["dev"]}
    assert (tmp_path / "out" / "asv" / "test_trials.txt").read_text().splitlines() == [
        "1 id10270-vidE-00001 id10270-vidF-00001",
        "0 id10270-vidE-00001 id10271-vidG-00001",
    ]
    speaker_of = {c.id: sup(c).speaker for s in ("train", "dev") for c in asv[s]}
    for split in ("train", "dev"):
        trials = [
            line.split()
            for line in (tmp_path / "out" / "asv" / f"{split}_trials.txt").read_text().splitlines()
        ]
        assert trials and {c for _, a, b in trials for c in (a, b)} == {c.id for c in asv[split]}
        assert all((label == "1") == (speaker_of[a] == speaker_of[b]) and a != b for label, a, b in trials)
        assert all(b in {c.id for c in asv[split]} for _, _, b in trials)  # trials stay inside their split


def test_voxceleb1_missing_trials(tmp_path: Path) -> None:
    build_voxceleb1(tmp_path / "vox")
    (tmp_path / "vox" / "veri_test2.txt").unlink()
    with pytest.raises(CorpusLayoutError, match="veri_test"):
        prepare_corpus("voxceleb1", tmp_path / "vox", tmp_path / "out")


# -------------------------------------------------------------------------------------------------- IEMOCAP
EMO_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def build_iemocap(root: Path) -> dict[str, str]:
    """Two utterances per session with labels among neu/exc/ang/sad/fru/xxx; returns the expected labels."""
    raw = ["neu", "exc", "ang", "fru", "sad", "hap", "xxx", "neu", "ang", "sad"]
    expected = {}
    for s in range(1, 6):
        dialog = f"Ses0{s}F_impro01"
        lines = [EMO_HEADER]
        for k, gender in enumerate("FM"):
            utt = f"{dialog}_{gender}00{k}"
            label = raw[2 * (s - 1) + k]
            write_wav(
                root / f"Session{s}" / "sentences" / "wav" / dialog / f"{utt}.wav", 0.5, seed=10 * s + k
            )
            lines.append(f"[{k}.0000 - {k}.5000]\t{utt}\t{label}\t[2.5000, 2.5000, 2.5000]\n")
            lines.append(f"C-E1:\t{label};\t()\n")  # evaluator lines are not labels
            names = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
            if label in names:
                expected[utt] = names[label]
        eval_dir = root / f"Session{s}" / "dialog" / "EmoEvaluation"
        eval_dir.mkdir(parents=True, exist_ok=True)
        (eval_dir / f"{dialog}.txt").write_text("".join(lines))
    return expected


def test_iemocap(tmp_path: Path) -> None:
    expected = build_iemocap(tmp_path / "iemocap")
    out = prepare_corpus("iemocap", tmp_path / "iemocap", tmp_path / "out")
    er = out["er"]
    got = {c.id: sup(c).custom["emotion"] for s in er for c in er[s]}
    assert got == expected  # fru and xxx dropped, exc merged into hap
    assert {sup(c).custom["fold"] for c in er["test"]} == {1}
    assert {c.id for c in er["test"]} == {"Ses01F_impro01_F000", "Ses01F_impro01_M001"}
    assert {sup(c).custom["fold"] for s in ("train", "dev") for c in er[s]} == {2, 3, 4, 5}
    assert sup(next(iter(er["test"]))).speaker == "Ses01F"
    assert {sup(c).speaker for c in er["test"]} == {"Ses01F", "Ses01M"}


def test_iemocap_missing_session(tmp_path: Path) -> None:
    build_iemocap(tmp_path / "iemocap")
    shutil.rmtree(tmp_path / "iemocap" / "Session4")
    with pytest.raises(CorpusLayoutError, match="Session4"):
        prepare_corpus("iemocap", tmp_path / "iemocap", None)


# ----------------------------------------------------------------------------------- Fluent Speech Commands
def build_fsc(root: Path) -> None:
    """One utterance per official split, each by its own speaker."""
    rows = {
        "train": ("spkA", "Turn on the lights in the kitchen", "activate", "lights", "kitchen"),
        "valid": ("spkB", "Bring me my shoes", "bring", "shoes", "none"),
        "test": ("spkC", "Decrease the heat", "decrease", "heat", "none"),
    }
    (root / "data").mkdir(parents=True)
    for i, (split, (spk, text, action, obj, loc)) in enumerate(rows.items()):
        rel = f"wavs/speakers/{spk}/utt{i}.wav"
        write_wav(root / rel, 0.6, seed=i)
        (root / "data" / f"{split}_data.csv").write_text(
            ",path,speakerId,transcription,action,object,location\n"
            f"0,{rel},{spk},{text},{action},{obj},{loc}\n"
        )


def test_fluent_speech_commands(tmp_path: Path) -> None:
    build_fsc(tmp_path / "fsc")
    ic = prepare_corpus("fluent_speech_commands", tmp_path / "fsc", tmp_path / "out")["ic"]
    train = sup(next(iter(ic["train"])))
    assert train.custom["intent"] == {"action": "activate", "object": "lights", "location": "kitchen"}
    assert train.text == "Turn on the lights in the kitchen" and train.speaker == "spkA"
    assert sup(next(iter(ic["dev"]))).custom["intent"]["object"] == "shoes"
    assert [sup(c).speaker for c in ic["test"]] == ["spkC"]


def test_fluent_speech_commands_missing_audio(tmp_path: Path) -> None:
    build_fsc(tmp_path / "fsc")
    (tmp_path / "fsc" / "wavs" / "speakers" / "spkB" / "utt1.wav").unlink()
    with pytest.raises(CorpusLayoutError, match="ic/dev: no usable utterances"):
        prepare_corpus("fluent_speech_commands", tmp_path / "fsc", tmp_path / "out")
    report = (tmp_path / "out" / "skipped_fluent_speech_commands.txt").read_text()
    assert report.endswith("spkB/utt1.wav: missing audio listed in valid_data.csv\n")
    assert not (tmp_path / "out" / "ic").exists()  # nothing half-written


# ---------------------------------------------------------------------------------------------- LibriSpeech
def build_librispeech(root: Path) -> None:
    """One chapter per part, two utterances each."""
    texts = {
        "train-clean-100": ("19", "198", ["A CAT", "THE DOG"]),
        "dev-clean": ("84", "121", ["HELLO WORLD", "NO"]),
        "test-clean": ("61", "70", ["YES", "STOP NOW"]),
    }
    for part, (spk, chapter, lines) in texts.items():
        folder = root / part / spk / chapter
        trans = []
        for k, text in enumerate(lines):
            utt = f"{spk}-{chapter}-{k:04d}"
            write_wav(folder / f"{utt}.flac", 0.5 + 0.25 * k, seed=k)
            trans.append(f"{utt} {text}")
        (folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(trans) + "\n")


def test_librispeech(tmp_path: Path) -> None:
    build_librispeech(tmp_path / "LibriSpeech")
    out = prepare_corpus("librispeech", tmp_path / "LibriSpeech", tmp_path / "out")
    for subset in ("asr", "pr"):
        written = {
            s: CutSet.from_file(tmp_path / "out" / subset / f"{s}.jsonl.gz") for s in ("train", "dev", "test")
        }
        assert {s: len(c) for s, c in written.items()} == {"train": 2, "dev": 2, "test": 2}
    dev = {sup(c).text: c for c in out["pr"]["dev"]}
    assert sup(dev["HELLO WORLD"]).custom["phones"] == ["HH", "AH", "L", "OW", "W", "ER", "L", "D"]
    assert sup(dev["HELLO WORLD"]).speaker == "84"
    assert dev["NO"].duration == pytest.approx(0.75)
    train = {sup(c).text: sup(c).custom["phones"] for c in out["asr"]["train"]}
    assert train["A CAT"][-3:] == ["K", "AE", "T"]


def test_librispeech_missing_part(tmp_path: Path) -> None:
    build_librispeech(tmp_path / "LibriSpeech")
    shutil.rmtree(tmp_path / "LibriSpeech" / "test-clean")
    with pytest.raises(CorpusLayoutError, match="test-clean"):
        prepare_corpus("librispeech", tmp_path / "LibriSpeech", None)


# ------------------------------------------------------------------------------------------------ Libri2Mix
def build_libri2mix(root: Path) -> dict[str, list[tuple[str, float, float]]]:
    """Per part one mixture of two sources speaking in known intervals; mixture -> [(spk, start, end)]."""
    expected = {}
    spans = {
        "train-100": [(0.1, 0.5), (0.3, 0.9)],
        "dev": [(0.0, 0.4), (0.5, 1.0)],
        "test": [(0.2, 0.6), (0.2, 0.6)],
    }
    rng = np.random.default_rng(0)
    (root / "metadata").mkdir(parents=True)
    for part, ((a0, a1), (b0, b1)) in spans.items():
        mix_id = {
            "train-100": "19-198-0001_84-121-0002",
            "dev": "61-70-0000_121-12-0003",
            "test": "1089-134686-0000_2300-131720-0001",
        }[part]
        sources = []
        for start, end in ((a0, a1), (b0, b1)):
            s = np.zeros(SR, np.float32)
            s[int(start * SR) : int(end * SR)] = rng.uniform(-0.3, 0.3, int(end * SR) - int(start * SR))
            sources.append(s)
        for name, audio in (("s1", sources[0]), ("s2", sources[1]), ("mix_clean", sources[0] + sources[1])):
            (root / part / name).mkdir(parents=True, exist_ok=True)
            sf.write(root / part / name / f"{mix_id}.wav", audio, SR, subtype="FLOAT")
        (root / "metadata" / f"mixture_{part}_mix_clean.csv").write_text(
            "mixture_ID,mixture_path,source_1_path,source_2_path,length\n"
            f"{mix_id},/gen/{part}/mix_clean/{mix_id}.wav,/gen/{part}/s1/{mix_id}.wav,/gen/{part}/s2/{mix_id}.wav,"
            f"{SR}\n"
        )
        spk = [u.split("-")[0] for u in mix_id.split("_")]
        expected[mix_id] = sorted([(spk[0], a0, a1), (spk[1], b0, b1)], key=lambda t: (t[1], t[0]))
    return expected


def test_libri2mix(tmp_path: Path) -> None:
    expected = build_libri2mix(tmp_path / "max")
    out = prepare_corpus("libri2mix", tmp_path / "max", tmp_path / "out")
    for split in ("train", "dev", "test"):
        (cut,) = list(CutSet.from_file(tmp_path / "out" / "ss" / f"{split}.jsonl.gz"))
        np.testing.assert_allclose(cut.load_source1() + cut.load_source2(), cut.load_audio(), atol=1e-6)
        assert [(s.speaker, s.custom["source"]) for s in cut.supervisions] == [
            (u.split("-")[0], k) for k, u in enumerate(cut.id.split("_"), 1)
        ]
        (dcut,) = list(out["sd"][split])
        got = sorted([(s.speaker, s.start, s.end) for s in dcut.supervisions], key=lambda t: (t[1], t[0]))
        want = expected[dcut.id]
        assert [g[0] for g in got] == [w[0] for w in want]
        np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], atol=0.011)
    rttm = (tmp_path / "out" / "sd" / "dev.rttm").read_text().splitlines()
    assert rttm == [
        "SPEAKER 61-70-0000_121-12-0003 1 0.000 0.400 <NA> <NA> 61 <NA> <NA>",
        "SPEAKER 61-70-0000_121-12-0003 1 0.500 0.500 <NA> <NA> 121 <NA> <NA>",
    ]


def test_activity_segments_bridges_short_pauses() -> None:
    from speechrep.data.recipes.libri2mix import activity_segments

    audio = np.zeros(2 * SR, np.float32)
    audio[int(0.2 * SR) : int(0.6 * SR)] = 0.5
    audio[int(0.7 * SR) : int(0.9 * SR)] = 0.5  # 0.1 s pause: bridged
    audio[int(1.5 * SR) : int(1.8 * SR)] = 0.5  # 0.6 s pause: a new segment
    assert activity_segments(audio, SR, min_pause=0.3) == [(0.2, 0.9), (1.5, 1.8)]
    assert activity_segments(audio, SR, min_pause=0.05) == [(0.2, 0.6), (0.7, 0.9), (1.5, 1.8)]


def test_libri2mix_missing_source(tmp_path: Path) -> None:
    build_libri2mix(tmp_path / "max")
    (tmp_path / "max" / "dev" / "s2" / "61-70-0000_121-12-0003.wav").unlink()
    with pytest.raises(CorpusLayoutError, match="ss/dev: no usable utterances"):
        prepare_corpus("libri2mix", tmp_path / "max", tmp_path / "out")
    report = (tmp_path / "out" / "skipped_libri2mix.txt").read_text()
    assert "dev/s2/61-70-0000_121-12-0003.wav: missing source audio" in report


# ---------------------------------------------------------------------------------------- VoiceBank-DEMAND
def build_voicebank(root: Path) -> None:
    """48 kHz noisy/clean twins: speakers p226 (dev), p230 (train) and p232 (test)."""
    for k, (noisy, clean, name) in enumerate(
        [
            ("noisy_trainset_28spk_wav", "clean_trainset_28spk_wav", "p226_001"),
            ("noisy_trainset_28spk_wav", "clean_trainset_28spk_wav", "p230_002"),
            ("noisy_testset_wav", "clean_testset_wav", "p232_001"),
        ]
    ):
        write_wav(root / clean / f"{name}.wav", 0.5, seed=k, sr=48000)
        write_wav(root / noisy / f"{name}.wav", 0.5, seed=10 + k, sr=48000)
    (root / "testset_txt").mkdir()
    (root / "testset_txt" / "p232_001.txt").write_text("Please call Stella.\n")
    (root / "logfiles").mkdir()
    (root / "logfiles" / "log_testset.txt").write_text("p232_001 bus 7.5\n")


def test_voicebank_demand(tmp_path: Path) -> None:
    build_voicebank(tmp_path / "vb")
    prepare_corpus("voicebank_demand", tmp_path / "vb", tmp_path / "out")
    se = {
        s: list(CutSet.from_file(tmp_path / "out" / "se" / f"{s}.jsonl.gz")) for s in ("train", "dev", "test")
    }
    assert [[c.id for c in se[s]] for s in ("train", "dev", "test")] == [
        ["p230_002"],
        ["p226_001"],
        ["p232_001"],
    ]
    (test,) = se["test"]
    assert sup(test).text == "Please call Stella." and sup(test).speaker == "p232"
    assert sup(test).custom == {"noise": "bus", "snr": 7.5}
    assert sup(se["train"][0]).custom is None  # no training log in this tree
    noisy, clean = test.load_audio(), test.load_clean()
    assert noisy.shape == clean.shape == (1, 8000)  # 0.5 s resampled to 16 kHz
    clean48 = sf.read(tmp_path / "vb" / "clean_testset_wav" / "p232_001.wav", dtype="float32")[0]
    assert np.std(clean) == pytest.approx(np.std(clean48[::3]), rel=0.5)  # same signal, not the noisy one
    assert not np.allclose(noisy, clean, atol=1e-3)


def test_voicebank_missing_clean_twin(tmp_path: Path) -> None:
    build_voicebank(tmp_path / "vb")
    (tmp_path / "vb" / "clean_trainset_28spk_wav" / "p230_002.wav").unlink()
    with pytest.raises(CorpusLayoutError, match="se/train: no usable utterances"):
        prepare_corpus("voicebank_demand", tmp_path / "vb", tmp_path / "out")
    report = (tmp_path / "out" / "skipped_voicebank_demand.txt").read_text()
    assert "clean_trainset_28spk_wav/p230_002.wav: missing clean twin of a noisy file" in report
    shutil.rmtree(tmp_path / "vb" / "noisy_testset_wav")
    with pytest.raises(CorpusLayoutError, match="noisy_testset_wav: missing noisy folder"):
        prepare_corpus("voicebank_demand", tmp_path / "vb", None)


# ------------------------------------------------------------------------------------------------- VCC 2020
def build_vcc2020(root: Path) -> None:
    """24 kHz: each source has sentences E10001 (its own) and E10051 (shared with the targets) and evaluation
    sentence E30001; each target has E10051, E10071 and the ground truth of E30001."""
    from speechrep.data.recipes.vcc2020 import SOURCES, TARGETS

    for k, speaker in enumerate(SOURCES):
        for name in ("E10001", "E10051"):
            write_wav(root / "source" / speaker / f"{name}.wav", 0.3, seed=k, sr=24000)
        write_wav(root / "vcc2020_database_evaluation" / speaker / "E30001.wav", 0.3, seed=10 + k, sr=24000)
    for k, speaker in enumerate(TARGETS):
        for name in ("E10051", "E10071"):
            write_wav(root / "target_task1" / speaker / f"{name}.wav", 0.3, seed=20 + k, sr=24000)
        write_wav(root / "vcc2020_database_groundtruth" / speaker / "E30001.wav", 0.3, seed=30 + k, sr=24000)
    texts = root / "vcc2020_database_transcriptions" / "transcriptions_training"
    texts.mkdir(parents=True)
    (texts / "vcc2020_database_training_Eng_transcriptions.txt").write_text("E10051 Shared sentence.\n")


def test_vcc2020_task1(tmp_path: Path) -> None:
    build_vcc2020(tmp_path / "vcc")
    prepare_corpus("vcc2020", tmp_path / "vcc", tmp_path / "out")
    folder = tmp_path / "out" / "vc_tef1"
    vc = {s: list(CutSet.from_file(folder / f"{s}.jsonl.gz")) for s in ("train", "dev", "test")}
    assert [c.id for c in vc["train"]] == ["TEF1_E10051", "TEF1_E10071"]
    assert [c.id for c in vc["dev"]] == ["SEF1_E10051", "SEF2_E10051", "SEM1_E10051", "SEM2_E10051"]
    assert [c.id for c in vc["test"]] == ["SEF1_E30001", "SEF2_E30001", "SEM1_E30001", "SEM2_E30001"]
    dev, test = vc["dev"][0], vc["test"][0]
    assert sup(dev).text == "Shared sentence." and sup(dev).speaker == "SEF1"
    assert sup(dev).custom["target_audio"].endswith("target_task1/TEF1/E10051.wav")
    assert sup(test).custom["target_audio"].endswith("vcc2020_database_groundtruth/TEF1/E30001.wav")
    assert dev.load_audio().shape == (1, 4800)  # 0.3 s at 16 kHz
    assert (tmp_path / "out" / "vc_tem2" / "test.jsonl.gz").is_file()
    shutil.rmtree(tmp_path / "vcc" / "vcc2020_database_groundtruth" / "TEM1")
    with pytest.raises(CorpusLayoutError, match="TEM1 folder"):
        prepare_corpus("vcc2020", tmp_path / "vcc", None)


# ------------------------------------------------------------------------------------------------- QUESST14
def build_quesst14(root: Path) -> None:
    """Three English documents and one Albanian, dev and eval queries, at 8 kHz like the release."""
    docs = {
        "quesst14_00001": "nnenglish",
        "quesst14_00002": "nnenglish",
        "quesst14_00003": "albanian",
        "quesst14_00004": "nnenglish",
    }
    queries = {
        "dev": {"quesst14_dev_0001": "nnenglish", "quesst14_dev_0002": "albanian"},
        "eval": {"quesst14_eval_0001": "nnenglish"},
    }
    for i, name in enumerate(docs):
        write_wav(root / "Audio" / f"{name}.wav", 1.0, seed=i, sr=8000)
    for split, names in queries.items():
        for i, name in enumerate(names):
            write_wav(root / f"{split}_queries" / f"{name}.wav", 0.4, seed=20 + i, sr=8000)
    scoring = root / "scoring"
    scoring.mkdir()
    (scoring / "language_key_utterances.lst").write_text(
        "".join(f"quesst14Database/Audio/{n}.wav {lang}\n" for n, lang in docs.items())
    )
    for split, names in queries.items():
        (scoring / f"language_key_{split}.lst").write_text(
            "".join(f"quesst14Database/{split}_queries/{n}.wav {lang}\n" for n, lang in names.items())
        )
        (scoring / f"groundtruth_quesst14_{split}").mkdir()
    (scoring / "groundtruth_quesst14_dev" / "quesst14_dev.rttm").write_text(
        "LEXEME quesst14_00001 1 0.20 0.40 quesst14_dev_0001 lex <NA> <NA>\n"
        "LEXEME quesst14_00004 1 0.10 0.40 quesst14_dev_0001 lex <NA> <NA>\n"
        "LEXEME quesst14_00003 1 0.10 0.40 quesst14_dev_0002 lex <NA> <NA>\n"
    )
    (scoring / "groundtruth_quesst14_eval" / "quesst14_eval.rttm").write_text(
        "LEXEME quesst14_00002 1 0.50 0.40 quesst14_eval_0001 lex <NA> <NA>\n"
    )


def test_quesst14(tmp_path: Path) -> None:
    build_quesst14(tmp_path / "quesst14Database")
    prepare_corpus("quesst14", tmp_path / "quesst14Database", tmp_path / "out")
    qbe = {
        name: {c.id: c for c in CutSet.from_file(tmp_path / "out" / "qbe" / f"{name}.jsonl.gz")}
        for name in ("dev", "dev_queries", "test", "test_queries")
    }
    docs = ["quesst14_00001", "quesst14_00002", "quesst14_00004"]  # the Albanian one is left out
    assert sorted(qbe["dev"]) == sorted(qbe["test"]) == docs
    assert sorted(qbe["dev_queries"]) == ["quesst14_dev_0001"]  # the Albanian query too
    assert sorted(qbe["test_queries"]) == ["quesst14_eval_0001"]
    assert sup(qbe["dev_queries"]["quesst14_dev_0001"]).custom == {
        "role": "query",
        "matches": ["quesst14_00001", "quesst14_00004"],
    }
    assert sup(qbe["test_queries"]["quesst14_eval_0001"]).custom["matches"] == ["quesst14_00002"]
    assert sup(qbe["dev"]["quesst14_00004"]).custom == {"role": "document", "contains": ["quesst14_dev_0001"]}
    assert sup(qbe["test"]["quesst14_00004"]).custom == {"role": "document", "contains": []}
    assert qbe["dev_queries"]["quesst14_dev_0001"].load_audio().shape == (1, 6400)  # 0.4 s, 8 -> 16 kHz
    assert not (tmp_path / "out" / "qbe" / "train.jsonl.gz").exists()
    truth = (tmp_path / "out" / "qbe" / "dev_truth.txt").read_text().splitlines()
    assert truth == [
        "quesst14_dev_0001 quesst14_00001 1",
        "quesst14_dev_0001 quesst14_00002 0",
        "quesst14_dev_0001 quesst14_00004 1",
    ]


def test_quesst14_missing_ground_truth(tmp_path: Path) -> None:
    build_quesst14(tmp_path / "q")
    (tmp_path / "q" / "scoring" / "groundtruth_quesst14_eval" / "quesst14_eval.rttm").unlink()
    with pytest.raises(CorpusLayoutError, match="quesst14_eval.rttm"):
        prepare_corpus("quesst14", tmp_path / "q", None)


# --------------------------------------------------------------------------------------------- Audio SNIPS
def build_snips(root: Path) -> None:
    """One utterance per split by a speaker of that split, plus a train-folder file by a test speaker."""
    lines = {
        "Joanna-snips-train-0": (
            "add sabrina salerno to the grime instrumentals playlist",
            "O B-artist I-artist O O B-playlist I-playlist O",
            "AddToPlaylist",
        ),
        "Brian-snips-train-1": ("play music", "O O", "PlayMusic"),
        "Amy-snips-valid-0": ("book a table in paris", "O O B-restaurant_type O B-city", "BookRestaurant"),
        "Emma-snips-test-0": (
            "what is the weather in new york city",
            "O O O O O B-city I-city I-city",
            "GetWeather",
        ),
    }
    text = []
    for uid, (words, tags, intent) in lines.items():
        folder = {"train": "train", "valid": "valid", "test": "test"}[uid.split("-")[2]]
        write_wav(root / folder / uid.split("-")[0] / f"{uid}.wav", 0.5, seed=len(text))
        text.append(f"{uid} BOS {words} EOS\tO {tags} {intent}\n")
    (root / "all.iob.snips.txt").write_text("".join(text))


def test_snips(tmp_path: Path) -> None:
    build_snips(tmp_path / "snips")
    sf_ = prepare_corpus("snips", tmp_path / "snips", tmp_path / "out")["sf"]
    assert [[c.id for c in sf_[s]] for s in ("train", "dev", "test")] == [
        ["Joanna-snips-train-0"],
        ["Amy-snips-valid-0"],
        ["Emma-snips-test-0"],
    ]  # Brian is a test speaker
    train = sup(next(iter(sf_["train"])))
    assert train.text == "add sabrina salerno to the grime instrumentals playlist"
    assert train.custom["slots"] == [
        {"type": "artist", "value": "sabrina salerno"},
        {"type": "playlist", "value": "grime instrumentals"},
    ]
    assert train.custom["intent"] == "AddToPlaylist" and len(train.custom["tags"]) == 8
    assert train.custom["tagged_text"] == (
        "add [artist: sabrina salerno] to the [playlist: grime instrumentals] playlist"
    )
    test = sup(next(iter(CutSet.from_file(tmp_path / "out" / "sf" / "test.jsonl.gz"))))
    assert test.custom["slots"] == [{"type": "city", "value": "new york city"}] and test.speaker == "Emma"


def test_snips_bad_line(tmp_path: Path) -> None:
    build_snips(tmp_path / "snips")
    with (tmp_path / "snips" / "all.iob.snips.txt").open("a") as f:
        f.write("Ivy-snips-train-9 BOS play it EOS\tO O PlayMusic\n")  # one tag short
    with pytest.raises(CorpusLayoutError, match="all.iob.snips.txt:5"):
        prepare_corpus("snips", tmp_path / "snips", None)


def test_unknown_corpus_and_missing_folder(tmp_path: Path) -> None:
    from speechrep.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown corpus 'timit'"):
        prepare_corpus("timit", tmp_path, None)
    with pytest.raises(CorpusLayoutError, match="does not exist"):
        prepare_corpus("snips", tmp_path / "nowhere", None)
    assert sorted(RECIPES) == [
        "common_voice",
        "covost2",
        "fluent_speech_commands",
        "iemocap",
        "libri2mix",
        "librispeech",
        "quesst14",
        "sbcsae",
        "snips",
        "speech_commands",
        "vcc2020",
        "voicebank_demand",
        "voxceleb1",
    ]


def test_cli_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from speechrep.cli import main

    build_fsc(tmp_path / "fsc")
    assert (
        main(
            [
                "prepare",
                "fluent_speech_commands",
                "--corpus-dir",
                str(tmp_path / "fsc"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert f"{tmp_path / 'out' / 'ic' / 'dev'}.jsonl.gz: 1 cuts" in capsys.readouterr().out
    assert (
        main(["prepare", "iemocap", "--corpus-dir", str(tmp_path / "fsc"), "--out", str(tmp_path / "o2")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("speechrep prepare: error: ") and "Session1: missing session folder" in err
    assert "\n" not in err


def test_slots_from_iob_edge_cases() -> None:
    from speechrep.data.recipes.snips import slots_from_iob, tagged_text

    words = ["in", "new", "york", "at", "noon", "today"]
    tags = ["O", "B-city", "I-city", "O", "I-time", "B-date"]  # a stray I- opens a slot
    assert slots_from_iob(words, tags) == [
        {"type": "city", "value": "new york"},
        {"type": "time", "value": "noon"},
        {"type": "date", "value": "today"},
    ]
    assert tagged_text(words, tags) == "in [city: new york] at [time: noon] [date: today]"
