"""Out-of-domain test splits of the synthetic corpus (`speechrep synth --domains`) and the `domain:name=X`
test condition that tests a benchmark's heads on them.

One `tiny` corpus of the subsets that take domain splits is built without domains, fingerprinted, then given
every domain; the checks read it back."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet
from test_report import parse

from speechrep.audio.conditions import distortions_only, parse_condition, parse_conditions
from speechrep.bench.report.robustness import condition_order, condition_point
from speechrep.cli import main
from speechrep.data.synth import PHONES, make_synthetic_corpus
from speechrep.data.synth.domains import ACCENT_LANGUAGES, DOMAIN_SUBSETS, DOMAINS, FILLERS
from speechrep.data.synth.speakers import ACCENTS, FEMALE_VARIANTS, MALE_VARIANTS
from speechrep.errors import ConfigError, SpeechrepError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SUBSETS = ["ks", "pr", "ic", "er", "sid"]
SPLITS = ("train", "dev", "test")
LABEL = {  # what each subset's head classifies
    "ks": lambda c: c.supervisions[0].custom["keyword"],
    "ic": lambda c: json.dumps(c.supervisions[0].custom["intent"], sort_keys=True),
    "er": lambda c: c.supervisions[0].custom["emotion"],
    "sid": lambda c: c.supervisions[0].speaker,
    "pr": lambda c: tuple(c.supervisions[0].custom["phones"]),
}


def _fingerprints(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".speechrep.lock"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The corpus with every domain, and the fingerprints of its files before the domains were added."""
    root = tmp_path_factory.mktemp("domains") / "corpus"
    make_synthetic_corpus(root, preset="tiny", seed=0, subsets=SUBSETS)
    before = _fingerprints(root)
    make_synthetic_corpus(root, preset="tiny", seed=0, subsets=SUBSETS, domains=DOMAINS)
    return root, before


def _cuts(root: Path, subset: str, split: str) -> list:
    return list(CutSet.from_file(root / subset / f"{split}.jsonl.gz"))


def _voice_variant(voice: str) -> str:
    return voice.partition("+")[2]


def test_every_domain_split_has_the_test_splits_items_and_label_space(built):
    root, _ = built
    for subset in SUBSETS:
        test = _cuts(root, subset, "test")
        for domain in DOMAINS:
            path = root / subset / f"test_{domain}.jsonl.gz"
            if subset not in DOMAIN_SUBSETS[domain]:
                assert subset == "sid" and domain == "unseen" and not path.exists()
                continue
            cuts = _cuts(root, subset, f"test_{domain}")
            assert len(cuts) == len(test) > 0, (subset, domain)
            assert all(c.custom["domain"] == domain for c in cuts)
            if subset == "pr":  # phones of the fixed set, as eSpeak said them (its reading varies with the
                # rate and voice); accented: those of the speaker's English reading, the test split's
                assert all(set(c.supervisions[0].custom["phones"]) <= set(PHONES) for c in cuts)
                if domain == "accented":
                    assert [LABEL["pr"](c) for c in cuts] == [LABEL["pr"](c) for c in test]
            else:  # item by item the label of the test split's item
                assert [LABEL[subset](c) for c in cuts] == [LABEL[subset](c) for c in test], (subset, domain)
            for cut in cuts:
                audio = cut.load_audio()
                assert audio.shape == (1, cut.num_samples) and np.isfinite(audio).all()
            card = json.loads((root / subset / f"test_{domain}.card.json").read_text())
            assert card["cuts"] == len(cuts) and card["domain"] == domain
    assert {c.supervisions[0].speaker for c in _cuts(root, "sid", "test_fast")} == \
        {c.supervisions[0].speaker for c in _cuts(root, "sid", "train")}  # SID: the closed set of speakers


def test_adding_domains_changes_no_existing_file_and_a_rerun_skips_them(built, caplog):
    root, before = built
    after = _fingerprints(root)
    assert {k: after[k] for k in before} == before
    added = sorted(set(after) - set(before))
    assert any(k.startswith("ks/audio_fast/") for k in added) and "ks/test_fast.jsonl.gz" in added
    with caplog.at_level(logging.INFO, logger="speechrep.data.synth.corpus"):
        corpus = make_synthetic_corpus(root, preset="tiny", seed=0, subsets=SUBSETS, domains=DOMAINS)
    assert _fingerprints(root) == after
    assert "ks/test_spontaneous: already complete, skipped" in caplog.text
    assert "building" not in caplog.text
    assert set(corpus["ks"]) == {"train", "dev", "test"} | {f"test_{d}" for d in DOMAINS}
    assert "test_unseen" not in corpus["sid"]


def test_a_domain_split_built_alone_is_the_same_and_a_missing_one_names_the_synth_command(built, tmp_path,
                                                                                         capsys):
    root, _ = built
    alone = tmp_path / "alone"
    assert main(["synth", "--preset", "tiny", "--seed", "0", "--out", str(alone), "--subsets", "ks",
                 "--domains", "fast"]) == 0

    def manifest(corpus: Path) -> str:  # manifests hold absolute audio paths
        cuts = [c.to_dict() for c in _cuts(corpus, "ks", "test_fast")]
        return json.dumps(cuts).replace(str(corpus), "ROOT")

    assert manifest(alone) == manifest(root)
    card = "ks/test_fast.card.json"
    assert (alone / card).read_bytes() == (root / card).read_bytes()
    assert _fingerprints(alone / "ks" / "audio_fast") == _fingerprints(root / "ks" / "audio_fast")
    capsys.readouterr()
    assert main(["benchmark", "--upstream", "fbank_global", "--tasks", "ks", "--corpus", str(alone),
                 "--out", str(tmp_path / "out"), "--preset", "tiny", "--test-conditions",
                 "clean,domain:name=slow"]) != 0
    error = capsys.readouterr().err
    assert f"`speechrep synth --out {alone} --preset tiny --seed 0 --subsets ks --domains slow`" in error
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "out").exists()  # refused before it ran


def test_unseen_speakers_and_voices_are_in_no_other_split(built):
    root, _ = built
    for subset in (s for s in SUBSETS if s in DOMAIN_SUBSETS["unseen"]):
        cuts = _cuts(root, subset, "test_unseen")
        speakers = {s.speaker for c in cuts for s in c.supervisions}
        voices = {c.custom["voice"] for c in cuts}
        for split in SPLITS:
            assert not speakers & {s.speaker for c in _cuts(root, subset, split) for s in c.supervisions}
        cards = [json.loads((root / name / "card.json").read_text()) for name in SUBSETS]
        used = {s["voice"] for card in cards for split in SPLITS for s in card["speakers"][split]}
        assert used and not voices & used  # no split of any subset speaks with these voices
        assert not {_voice_variant(v) for v in voices} & (set(FEMALE_VARIANTS) | set(MALE_VARIANTS))
        assert {v.partition("+")[0] for v in voices} <= set(ACCENTS)  # English accents, unseen timbres
        assert len(speakers) == len({s.speaker for c in _cuts(root, subset, "test") for s in c.supervisions})


def _seconds_per_word(cut, span: bool) -> float | None:
    """Duration per word: the cut's duration, or (fixed-length KS clips) the span of its aligned words."""
    sup = cut.supervisions[0]
    words = len(sup.text.split())
    if not words:
        return None
    if span:
        aligned = sup.custom["word_alignment"]
        return (aligned[-1][2] - aligned[0][1]) / words
    return cut.duration / words


def test_fast_and_slow_speech_take_less_and_more_time_per_word(built):
    root, _ = built
    for subset in SUBSETS:
        span = subset == "ks"
        base = [_seconds_per_word(c, span) for c in _cuts(root, subset, "test")]
        for domain, low, high in (("fast", 0.0, 0.7), ("slow", 1.6, 10.0)):
            cuts = _cuts(root, subset, f"test_{domain}")
            ratios = [d / b for d, b in zip((_seconds_per_word(c, span) for c in cuts), base) if b]
            assert ratios and all(low <= r <= high for r in ratios), (subset, domain, ratios)
            wpm = [c.custom["wpm"] for c in cuts]
            assert (max(wpm) <= 225) if domain == "slow" else (min(wpm) >= 200), (subset, domain, wpm)


def test_accented_speech_is_english_text_read_by_other_language_voices(built):
    root, _ = built
    for subset in SUBSETS:
        test, cuts = _cuts(root, subset, "test"), _cuts(root, subset, "test_accented")
        languages = {c.custom["voice"].partition("+")[0] for c in cuts}
        assert languages <= set(ACCENT_LANGUAGES) and not languages & set(ACCENTS)
        # the same speakers (ids, variants) saying the same words
        assert [c.supervisions[0].speaker for c in cuts] == [c.supervisions[0].speaker for c in test]
        assert [c.supervisions[0].text for c in cuts] == [c.supervisions[0].text for c in test]
        card = json.loads((root / subset / "card.json").read_text())
        card = {s["id"]: s["voice"] for s in card["speakers"]["test"]}
        assert all(_voice_variant(c.custom["voice"]) == _voice_variant(card[c.supervisions[0].speaker])
                   for c in cuts)
    for cut in _cuts(root, "pr", "test_accented"):  # English phone labels, no alignment of foreign phonemes
        custom = cut.supervisions[0].custom
        assert "phone_alignment" not in custom and custom["word_alignment"]


def test_spontaneous_speech_has_fillers_and_pr_alignments_cover_every_spoken_word(built):
    root, _ = built
    fillers = {w for f in FILLERS for w in f.split()}
    for subset in SUBSETS:
        for plain, spoken in zip(_cuts(root, subset, "test"), _cuts(root, subset, "test_spontaneous")):
            words, said = plain.supervisions[0].text.split(), spoken.supervisions[0].text.split()
            if not words:  # KS `_silence_`
                assert not said
                continue
            assert set(said) & fillers and len(said) > len(words), (subset, said)
            remaining = iter(said)  # the original words, in order, inside the spontaneous ones
            assert all(w in remaining for w in words)
    for plain, cut in zip(_cuts(root, "pr", "test"), _cuts(root, "pr", "test_spontaneous")):
        custom = cut.supervisions[0].custom
        assert custom["phones"] == [p for p, _, _ in custom["phone_alignment"]]
        assert len(custom["phones"]) > len(plain.supervisions[0].custom["phones"])
        # every spoken word is aligned, fillers and repetitions included (eSpeak's word events sometimes merge
        # or split words, as in the test split: compared letter by letter)
        aligned = "".join(w for w, _, _ in custom["word_alignment"]).replace(" ", "")
        assert aligned == cut.supervisions[0].text.replace(" ", "")
        for word, start, end in custom["word_alignment"]:  # each word, fillers included, has its phones
            assert any(start - 1e-3 <= a and b <= end + 1e-3 for _, a, b in custom["phone_alignment"]), word
        phones, words = custom["phone_alignment"], custom["word_alignment"]
        assert phones[0][1] <= words[0][1] and phones[-1][2] >= words[-1][2]
        assert 0 <= phones[0][1] and phones[-1][2] <= cut.duration


def test_domain_condition_spelling_and_where_it_is_refused():
    condition = parse_condition("domain:name=accented")
    assert (condition.kind, condition.spec, condition.test_split, str(condition)) == \
        ("domain", "domain:name=accented", "test_accented", "domain:name=accented")
    assert parse_condition("clean").test_split == parse_condition("noise:snr=5").test_split == "test"
    assert [c.test_split for c in parse_conditions("clean,domain:name=fast,domain:name=slow")] == \
        ["test", "test_fast", "test_slow"]
    for bad in ("domain", "domain:name=Fast", "domain:name=a-b", "domain:speed=2"):
        with pytest.raises(ConfigError):
            parse_condition(bad)
    with pytest.raises(SpeechrepError):
        condition.apply(np.zeros(16000, np.float32), "utt")
    with pytest.raises(ConfigError, match="test conditions only"):
        distortions_only(parse_conditions("clean,domain:name=fast"), "--train-conditions")
    point = condition_point("domain:name=fast")
    assert (point.kind, point.severity) == ("domain", None)  # in the report's table only, like telephone
    rows = [{"test_by_condition": {c: {} for c in ("domain:name=fast", "telephone", "noise:snr=5", "clean")}}]
    assert condition_order(rows) == ["clean", "noise:snr=5", "telephone", "domain:name=fast"]


def test_a_benchmark_tests_its_head_on_the_domain_split(built, tmp_path):
    root, _ = built
    out = tmp_path / "out"
    assert main(["benchmark", "--upstream", "fbank_global", "--tasks", "ks", "--corpus", str(root),
                 "--out", str(out), "--preset", "tiny",
                 "--test-conditions", "clean,domain:name=fast,domain:name=spontaneous",
                 "train.max_steps=10", "train.eval_every=5"]) == 0
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert set(row["test_by_condition"]) == {"clean", "domain:name=fast", "domain:name=spontaneous"}
    assert row["test_by_condition"]["clean"] == row["test"]
    assert row["condition_splits"] == {"domain:name=fast": {"split": "test_fast", "cuts": 12},
                                       "domain:name=spontaneous": {"split": "test_spontaneous", "cuts": 12}}
    # each split's cuts went through the upstream: the feature cache holds them beside the test split's
    cached = "".join(p.read_text() for p in (out / "features").rglob("*.json"))
    assert all(f"{cut_id}#" in cached for cut_id in ("ks_test_00000", "ks_test_fast_00011",
                                                      "ks_test_spontaneous_00000"))
    board = (out / "leaderboard.md").read_text()
    assert "| clean | domain:name=fast | domain:name=spontaneous |" in board and "out-of-domain" in board
    assert main(["report", str(out)]) == 0
    table = parse((out / "report.html").read_text()).table("robustness")
    assert [c["text"] for c in table[0][4:]] == ["clean", "domain:name=fast", "domain:name=spontaneous"]
    assert [c["text"] for c in table[1][5:]] == [f"{100 * row['test_by_condition'][c]['accuracy']:.2f}"
                                                 for c in ("domain:name=fast", "domain:name=spontaneous")]
