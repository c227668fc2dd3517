"""The synthetic corpus: manifests, labels, alignments, speaker splits, mixtures, resumability, determinism.

One `micro` corpus (every subset, a few items each) is built per session; the checks read it back."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet

from speechrep.audio.augment import snr_db
from speechrep.cli import main
from speechrep.data.synth import PHONES, SUBSETS, espeak, make_synthetic_corpus, map_espeak_phonemes
from speechrep.data.synth.text import IC_INTENTS, KEYWORDS, SF_SLOT_VALUES

SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    make_synthetic_corpus(out, preset="micro", seed=0)
    return out


@pytest.fixture(scope="module")
def corpus(corpus_dir) -> dict:
    return make_synthetic_corpus(corpus_dir, preset="micro", seed=0)  # complete: only loads


def _speakers(cuts: CutSet) -> set[str]:
    return {s.speaker for c in cuts for s in c.supervisions}


def test_every_subset_has_loadable_splits_with_audio(corpus, corpus_dir):
    assert set(corpus) == set(SUBSETS)
    for name, splits in corpus.items():
        for split in SPLITS:
            cuts = CutSet.from_file(corpus_dir / name / f"{split}.jsonl.gz")
            assert len(cuts) > 0, (name, split)
            cut = cuts[0]
            audio = cut.load_audio()
            assert audio.shape == (1, cut.num_samples) and cut.sampling_rate == 16000
            assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3
            assert (np.abs(audio) == 0).mean() < 0.01, "no long runs of exact zeros"
            assert Path(cut.recording.sources[0].source).is_absolute()


def test_labels_each_task_needs(corpus):
    for cut in corpus["pr"]["train"]:
        sup = cut.supervisions[0]
        assert sup.text and sup.speaker and sup.language == "en"
        assert sup.custom["phones"] and set(sup.custom["phones"]) <= set(PHONES)
        assert [p for p, _, _ in sup.custom["phone_alignment"]] == sup.custom["phones"]
    assert {c.supervisions[0].custom["keyword"] for c in corpus["ks"]["train"]} == set(KEYWORDS) | {
        "_unknown_",
        "_silence_",
    }
    assert all(c.duration == pytest.approx(1.0) for c in corpus["ks"]["train"])
    assert {c.supervisions[0].custom["emotion"] for c in corpus["er"]["train"]} == {
        "neutral",
        "happy",
        "angry",
        "sad",
    }
    for cut in corpus["ss"]["train"]:
        assert len(cut.supervisions) == 2 and cut.has_custom("source1") and cut.has_custom("source2")


def test_alignments_lie_on_the_speech(corpus):
    for cut in list(corpus["asr"]["train"]) + list(corpus["ic"]["train"]):
        sup = cut.supervisions[0]
        phones = np.array([[s, e] for _, s, e in sup.custom["phone_alignment"]])
        assert np.all(phones[:, 1] > phones[:, 0]) and np.all(np.diff(phones[:, 0]) >= 0)
        assert phones[0, 0] >= 0 and phones[-1, 1] <= cut.duration + 1e-6
        words = sup.custom["word_alignment"]
        assert " ".join(w for w, _, _ in words).split() == sup.text.split()
        audio = cut.load_audio()[0]
        inside = np.zeros(audio.size, bool)
        for start, end in phones:
            inside[int(start * 16000) : int(end * 16000)] = True
        before = audio[: int(phones[0, 0] * 16000)]
        if before.size > 800 and "background_snr_db" not in (cut.custom or {}).get("effects", {}):
            # the padding is far quieter than the aligned speech (reverb tails make "after" unreliable)
            assert np.mean(before**2) < 0.01 * np.mean(audio[inside] ** 2)


def test_known_word_phonemes_round_trip(corpus):
    assert map_espeak_phonemes(espeak.text_to_phonemes("cat")) == ["K", "AE", "T"]
    assert map_espeak_phonemes(espeak.text_to_phonemes("stop")) == ["S", "T", "AA", "P"]
    # the same phones come out of the synthesis events of a spoken keyword
    expected = {"yes": ["Y", "EH", "S"], "stop": ["S", "T", "AA", "P"], "go": ["G", "OW"]}
    for cut in corpus["ks"]["train"]:
        sup = cut.supervisions[0]
        if sup.custom["keyword"] in expected:
            assert sup.custom["phones"] == expected[sup.custom["keyword"]], (sup.text, sup.custom["phones"])


def test_speaker_disjoint_splits(corpus):
    for name in SUBSETS:
        train, dev, test = (_speakers(corpus[name][s]) for s in SPLITS)
        if name == "sid":
            assert dev <= train and test <= train
        else:
            assert not (train & dev) and not (train & test) and not (dev & test), name
    downstream_test = set().union(*(_speakers(corpus[n]["test"]) for n in SUBSETS if n != "unlabeled"))
    assert not _speakers(corpus["unlabeled"]["train"]) & downstream_test


def test_ic_text_matches_intent(corpus):
    words = {"lights": "lights", "heat": "heating", "volume": "volume", "music": "music", "lamp": "lamp"}
    for cut in corpus["ic"]["train"]:
        text, intent = cut.supervisions[0].text, cut.supervisions[0].custom["intent"]
        assert (intent["action"], intent["object"], intent["location"]) in IC_INTENTS
        assert words.get(intent["object"], intent["object"]) in text.split()
        assert (intent["location"] in text.split()) == (intent["location"] != "none")
        if intent["action"] == "activate":
            assert " on" in text and " off" not in text
        if intent["action"] == "deactivate":
            assert " off" in text


def test_sf_slots_and_tags_match_text(corpus):
    for cut in corpus["sf"]["train"]:
        sup = cut.supervisions[0]
        words, tags = sup.text.split(), sup.custom["tags"]
        assert len(words) == len(tags)
        spans = [
            " ".join(w for w, t in zip(words, tags) if t.endswith("-" + slot["type"]))
            for slot in sup.custom["slots"]
        ]
        for slot, span in zip(sup.custom["slots"], spans):
            assert slot["value"] in SF_SLOT_VALUES[slot["type"]] and slot["value"] in span


def test_sd_rttm_matches_where_speech_was_placed(corpus, corpus_dir):
    for split in SPLITS:
        rttm = [line.split() for line in (corpus_dir / "sd" / f"{split}.rttm").read_text().splitlines()]
        cuts = corpus["sd"][split]
        assert len(rttm) == sum(len(c.supervisions) for c in cuts)
        for cut in cuts:
            audio = cut.load_audio()[0]
            rows = [r for r in rttm if r[1] == cut.id]
            active = np.zeros(audio.size, bool)
            for row in rows:
                start, dur = float(row[3]), float(row[4])
                active[int(start * 16000) : int((start + dur) * 16000)] = True
            silence_power = np.mean(audio[~active] ** 2)
            assert silence_power < 0.05 * np.mean(audio[active] ** 2)
            for row in rows:  # each turn starts and ends with speech, well above the pauses
                start, end = int(float(row[3]) * 16000), int((float(row[3]) + float(row[4])) * 16000)
                frames = audio[start:end][: (end - start) // 400 * 400].reshape(-1, 400)
                energy = np.mean(frames**2, axis=1)
                assert energy.mean() > 20 * silence_power
                assert energy[:4].max() > 3 * silence_power and energy[-4:].max() > 3 * silence_power
            assert len({r[7] for r in rows}) == 2


def test_ss_sources_sum_to_the_mixture(corpus):
    for cut in corpus["ss"]["train"]:
        mix, s1, s2 = cut.load_audio()[0], cut.load_source1()[0], cut.load_source2()[0]
        np.testing.assert_allclose(mix, s1 + s2, atol=1e-6)
        assert np.mean(s1**2) > 1e-5 and np.mean(s2**2) > 1e-5


def test_se_noisy_is_clean_plus_noise_at_the_stated_snr(corpus):
    for cut in corpus["se"]["train"]:
        noisy, clean = cut.load_audio()[0], cut.load_clean()[0]
        assert snr_db(clean, noisy - clean) == pytest.approx(cut.supervisions[0].custom["snr"], abs=0.3)


def test_qbe_truth_and_asv_trials_are_consistent(corpus, corpus_dir):
    for split in SPLITS:
        terms = {c.id: c.supervisions[0].custom["term"] for c in corpus["qbe"][f"{split}_queries"]}
        texts = {c.id: c.supervisions[0].text.split() for c in corpus["qbe"][split]}
        lines = [
            line.split() for line in (corpus_dir / "qbe" / f"{split}_truth.txt").read_text().splitlines()
        ]
        assert len(lines) == len(terms) * len(texts)
        assert {int(label) for _, _, label in lines} == {0, 1}
        for query, doc, label in lines:
            assert (terms[query] in texts[doc]) == (label == "1")
        speaker = {c.id: c.supervisions[0].speaker for c in corpus["asv"][split]}
        trials = [
            line.split() for line in (corpus_dir / "asv" / f"{split}_trials.txt").read_text().splitlines()
        ]
        assert trials and {t[0] for t in trials} == {"0", "1"}
        for label, enroll, test in trials:
            assert (speaker[enroll] == speaker[test]) == (label == "1") and enroll != test


def test_er_folds_follow_speaker_groups(corpus):
    folds = {split: {c.supervisions[0].custom["fold"] for c in corpus["er"][split]} for split in SPLITS}
    assert folds["test"] == {5} and folds["dev"] == {4} and folds["train"] <= {1, 2, 3}


def test_cards_count_the_manifests_and_hold_a_baseline(corpus, corpus_dir):
    for name in SUBSETS:
        card = json.loads((corpus_dir / name / "card.json").read_text())
        for split in SPLITS:
            assert card["splits"][split]["cuts"] == len(corpus[name][split])
        assert (corpus_dir / name / "card.md").read_text().startswith("# synthetic")
    for name in ("ks", "sid", "er"):
        baseline = json.loads((corpus_dir / name / "card.json").read_text())["baseline"]
        assert 0.0 <= baseline["test_accuracy"] <= 1.0 and baseline["num_classes"] >= 2


def test_rebuild_is_byte_identical_and_complete_subsets_are_skipped(corpus_dir):
    names = ("ks", "ss", "sd")
    manifests = {n: (corpus_dir / n / "train.jsonl.gz").read_bytes() for n in names}
    audio = {n: sorted((corpus_dir / n / "audio").glob("*.flac"))[0].read_bytes() for n in names}
    untouched = (corpus_dir / "pr" / "train.jsonl.gz").stat().st_mtime_ns
    for n in names:
        (corpus_dir / n / ".complete").unlink()  # an interrupted build: redone from scratch
    make_synthetic_corpus(corpus_dir, preset="micro", seed=0)
    assert (corpus_dir / "pr" / "train.jsonl.gz").stat().st_mtime_ns == untouched
    for n in names:
        assert (corpus_dir / n / "train.jsonl.gz").read_bytes() == manifests[n]
        assert sorted((corpus_dir / n / "audio").glob("*.flac"))[0].read_bytes() == audio[n]
    with gzip.open(corpus_dir / "ks" / "train.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["type"] == "MonoCut"


def test_a_subset_whose_preset_was_resized_is_rebuilt(tmp_path, monkeypatch):
    from speechrep.data.synth import corpus as corpus_module

    make_synthetic_corpus(tmp_path, preset="micro", seed=0, subsets=["asv"])
    resized = {**corpus_module.PRESETS["micro"], "asv": ((2, 2, 2), (6, 4, 4))}
    monkeypatch.setitem(corpus_module.PRESETS, "micro", resized)
    make_synthetic_corpus(tmp_path, preset="micro", seed=0, subsets=["asv"])
    assert len(CutSet.from_file(tmp_path / "asv" / "train.jsonl.gz")) == 6


def test_other_seed_gives_other_corpus_and_cli_reports_bad_subsets(tmp_path, corpus_dir, capsys):
    make_synthetic_corpus(tmp_path, preset="micro", seed=1, subsets=["sf"])
    other = [c.supervisions[0].text for c in CutSet.from_file(tmp_path / "sf" / "train.jsonl.gz")]
    ours = [c.supervisions[0].text for c in CutSet.from_file(corpus_dir / "sf" / "train.jsonl.gz")]
    assert other != ours
    assert main(["synth", "--out", str(tmp_path), "--subsets", "ks,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "sf")


def test_make_trials_pairs_every_cut_once_and_samples_non_targets():
    from lhotse import MonoCut, SupervisionSegment

    from speechrep.data.trials import make_trials

    def cut(i: int, speaker: str) -> MonoCut:
        sup = SupervisionSegment(id=f"c{i}", recording_id=f"c{i}", start=0, duration=1, speaker=speaker)
        return MonoCut(id=f"c{i}", start=0, duration=1, channel=0, supervisions=[sup])

    cuts = [cut(i, f"s{i % 3}") for i in range(9)]  # 3 speakers x 3 cuts: 9 target, 27 non-target pairs
    trials = make_trials(np.random.default_rng(0), cuts)
    pairs = [frozenset((a, b)) for _, a, b in trials]
    assert len(pairs) == len(set(pairs)) == 36 and all(len(p) == 2 for p in pairs)
    assert sum(label for label, _, _ in trials) == 9
    sampled = make_trials(np.random.default_rng(0), cuts, max_nontarget_ratio=2)
    assert [t for t in sampled if t[0] == 1] == [t for t in trials if t[0] == 1]
    assert sum(1 for label, _, _ in sampled if label == 0) == 18
    assert set(sampled) <= set(trials)
    assert sampled == make_trials(np.random.default_rng(0), cuts, max_nontarget_ratio=2)  # seeded


def test_a_subset_with_a_failed_item_is_not_marked_complete_and_the_rerun_rebuilds_it(tmp_path, monkeypatch):
    from speechrep.data.synth import corpus as corpus_module
    from speechrep.storage import OutputError

    real_run = corpus_module.SynthesisRunner.run

    def lose_the_test_split(self, jobs, desc="synth"):
        for index, meta in real_run(self, jobs, desc):
            yield index, (None if desc.endswith("/test") else meta)  # e.g. every write of the split failed

    monkeypatch.setattr(corpus_module.SynthesisRunner, "run", lose_the_test_split)
    with pytest.raises(OutputError, match="2 of 7 items failed to synthesise"):
        make_synthetic_corpus(tmp_path, preset="micro", seed=0, subsets=["asr"], num_workers=1)
    assert not (tmp_path / "asr" / ".complete").exists()
    monkeypatch.setattr(corpus_module.SynthesisRunner, "run", real_run)
    rebuilt = make_synthetic_corpus(tmp_path, preset="micro", seed=0, subsets=["asr"], num_workers=1)
    assert [len(rebuilt["asr"][s]) for s in SPLITS] == [3, 2, 2] and (tmp_path / "asr" / ".complete").is_file()


def test_verification_catches_a_missing_or_empty_audio_file(corpus_dir, tmp_path):
    from speechrep.data.synth.corpus import verify_subset
    from speechrep.storage import OutputError

    copy = tmp_path / "ks"
    shutil.copytree(corpus_dir / "ks", copy)
    counts = {s: len(CutSet.from_file(copy / f"{s}.jsonl.gz")) for s in SPLITS}
    with gzip.open(copy / "dev.jsonl.gz", "rt") as f:
        row = json.loads(f.readline())
    verify_subset(corpus_dir / "ks", counts)  # the real one passes
    with pytest.raises(OutputError, match="test manifests hold 4 of 5 cuts"):
        verify_subset(corpus_dir / "ks", {**counts, "test": counts["test"] + 1})
    audio = Path(row["recording"]["sources"][0]["source"])
    assert audio.is_file()
    # the manifests name absolute paths into corpus_dir: verify a copy whose rows point at an emptied file
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    with gzip.open(copy / "dev.jsonl.gz", "wt") as f:
        f.write(json.dumps({**row, "recording": {**row["recording"], "sources": [
            {**row["recording"]["sources"][0], "source": str(empty)}]}}) + "\n")
    with pytest.raises(OutputError, match="missing or empty"):
        verify_subset(copy, {**counts, "dev": 1})


def test_synth_out_is_locked_records_preset_and_seed_and_rejects_a_file(tmp_path, capsys):
    from speechrep.storage import OutputLock

    out = tmp_path / "corpus"
    argv = ["synth", "--out", str(out), "--subsets", "ks", "--workers", "1"]
    with OutputLock(out, "another speechrep synth"):
        assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "in use by another speechrep synth" in err
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--seed", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "seed: 0 -> 1" in err and "--overwrite" in err
    assert main([*argv, "--seed", "1", "--overwrite"]) == 0
    assert json.loads((out / ".speechrep.settings.json").read_text()) == {"preset": "tiny", "seed": 1}
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    assert main(["synth", "--out", str(tmp_path / "file"), "--subsets", "ks"]) == 1
    assert "not a folder" in capsys.readouterr().err
    for flag, value in (("--seed", "-1"), ("--workers", "0")):
        assert main([*argv, flag, value]) == 2
        assert "expected an integer" in capsys.readouterr().err
