"""The prosody-intensive utterance tasks (issue 17): the opt-in synthetic subsets `sentence_type`, `emphasis`
and `irony` (tiny preset) are deterministic, their words alone are at chance, their classes differ
acoustically as designed (measured with `pitch_track`), and each task trains with `run_pair` on fbank."""
from __future__ import annotations

import collections
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet

from speechrep.data.synth import OPT_IN_SUBSETS, SUBSETS, make_synthetic_corpus
from speechrep.data.synth.acoustics import class_differences, utterance_measures
from speechrep.data.synth.card import text_baseline
from speechrep.data.synth.prosodic import PROSODIC_PLANNERS
from speechrep.data.synth.render import UtteranceSpec, _label_text, synthesis_request
from speechrep.data.synth.speakers import make_speakers
from speechrep.downstream import runner
from speechrep.downstream.features import FeatureSource
from speechrep.downstream.tasks import get_task, list_tasks

SPLITS = ("train", "dev", "test")
PROSODIC = tuple(PROSODIC_PLANNERS)  # the prosodic opt-in subsets (OPT_IN_SUBSETS also holds ood_asr and st)
CLASSES = {"sentence_type": {"statement", "question", "exclamation"}, "emphasis": {1, 2, 3},
           "irony": {"sincere", "ironic"}}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prosodic") / "corpus"
    make_synthetic_corpus(out, preset="tiny", seed=0, subsets=list(PROSODIC), num_workers=2)
    return out


def _cuts(corpus_dir: Path, name: str) -> dict[str, CutSet]:
    return {split: CutSet.from_file(corpus_dir / name / f"{split}.jsonl.gz") for split in SPLITS}


def _manifest_lines(path: Path, root: Path) -> list[str]:
    return gzip.open(path, "rt").read().replace(str(root), "ROOT").splitlines()


def _spec(text: str, ssml: bool) -> UtteranceSpec:
    speaker = make_speakers(np.random.default_rng(0), 1, "s")[0]
    return UtteranceSpec(text, speaker, seed=1, rate=170, pitch=50, pitch_range=50, ssml=ssml)


def test_opt_in_subsets_leave_the_default_corpus_alone() -> None:
    # A subset's random stream is seeded by its index in SUBSETS + OPT_IN_SUBSETS: the 13 default subsets keep
    # their order (and so their audio) and the prosodic ones are only built when named.
    assert SUBSETS == ("unlabeled", "pr", "asr", "ks", "qbe", "sid", "asv", "sd", "er", "ic", "sf", "se",
                       "ss")
    assert OPT_IN_SUBSETS == ("sentence_type", "emphasis", "irony", "ood_asr", "st")
    plain = _spec("anna bought red apples", ssml=False)
    assert not synthesis_request(plain)["ssml"] and _label_text(plain) == plain.text


def test_ssml_word_labels_are_the_plain_words() -> None:
    spec = _spec("<speak>anna <emphasis>bought</emphasis> red apples?</speak>", ssml=True)
    labelled = _label_text(spec)
    assert len(labelled) == len(spec.text) and labelled.split() == ["anna", "bought", "red", "apples"]


def test_subsets_are_deterministic(corpus_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_synthetic_corpus(again, preset="tiny", seed=0, subsets=["emphasis"], num_workers=1)
    for split in SPLITS:
        assert (_manifest_lines(again / "emphasis" / f"{split}.jsonl.gz", again)
                == _manifest_lines(corpus_dir / "emphasis" / f"{split}.jsonl.gz", corpus_dir))
    first = sorted((corpus_dir / "emphasis" / "audio").iterdir())
    assert [p.name for p in first] == sorted(p.name for p in (again / "emphasis" / "audio").iterdir())
    assert all(p.read_bytes() == (again / "emphasis" / "audio" / p.name).read_bytes() for p in first)


@pytest.mark.parametrize("name", PROSODIC)
def test_every_transcript_carries_every_class_once(corpus_dir: Path, name: str) -> None:
    cuts = _cuts(corpus_dir, name)
    texts, speakers = {}, {}
    for split in SPLITS:
        per_text = collections.defaultdict(list)
        for cut in cuts[split]:
            sup = cut.supervisions[0]
            assert sup.text == sup.text.lower() and sup.text.replace(" ", "").isalpha()  # no markup
            assert [w for w, _, _ in sup.custom["word_alignment"]][-2:] == sup.text.split()[-2:]
            per_text[sup.text].append((sup.custom[name], sup.speaker))
        for text, rendered in per_text.items():
            assert sorted(map(str, (c for c, _ in rendered))) == sorted(map(str, CLASSES[name])), text
            assert len({s for _, s in rendered}) == 1  # a minimal set: one speaker says every class
        texts[split], speakers[split] = set(per_text), {c.supervisions[0].speaker for c in cuts[split]}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not texts[a] & texts[b] and not speakers[a] & speakers[b]


@pytest.mark.parametrize("name", PROSODIC)
def test_text_alone_is_at_chance(corpus_dir: Path, name: str) -> None:
    cuts = {split: list(c) for split, c in _cuts(corpus_dir, name).items()}
    label = lambda cut: str(cut.supervisions[0].custom[name])  # noqa: E731
    chance = 1 / len(CLASSES[name])
    # Each test transcript occurs once per class, so any function of the text is right exactly once per set.
    assert text_baseline(cuts, label)["test_accuracy"] == pytest.approx(chance, abs=1e-4)
    # A transcript lookup (the most frequent class of each train transcript, else of the whole train split).
    per_text = collections.defaultdict(collections.Counter)
    for cut in cuts["train"]:
        per_text[cut.supervisions[0].text][label(cut)] += 1
    overall = collections.Counter(label(c) for c in cuts["train"]).most_common(1)[0][0]
    guess = {text: counts.most_common(1)[0][0] for text, counts in per_text.items()}
    hits = [guess.get(c.supervisions[0].text, overall) == label(c) for c in cuts["test"]]
    assert sum(hits) / len(hits) == pytest.approx(chance)
    card = json.loads((corpus_dir / name / "card.json").read_text())
    assert card["text_baseline"]["test_accuracy"] == pytest.approx(chance, abs=1e-4)
    assert card["acoustics"] and card["prosodic_baseline"]["test_accuracy"] > chance


def _differences(corpus_dir: Path, name: str) -> dict:
    cuts = [c for split in SPLITS for c in _cuts(corpus_dir, name)[split]]
    return class_differences(name, [(c, utterance_measures(name, c)) for c in cuts])


def test_questions_rise_and_exclamations_fall_further(corpus_dir: Path) -> None:
    by_type = _differences(corpus_dir, "sentence_type")
    slope = {k: v["final_slope_st_per_s"] for k, v in by_type.items()}
    assert slope["question"] > 0 > slope["statement"] > slope["exclamation"]
    assert slope["question"] - slope["statement"] > 10  # semitones per second
    assert by_type["exclamation"]["f0_range_st"] > by_type["statement"]["f0_range_st"]
    assert by_type["exclamation"]["median_f0_st"] > by_type["statement"]["median_f0_st"] + 1


def test_the_emphasised_word_is_longer_louder_and_carries_a_pitch_accent(corpus_dir: Path) -> None:
    emphasised = _differences(corpus_dir, "emphasis")["emphasised_minus_unemphasised"]
    assert emphasised["words"] == 42  # 14 sentences x 3 renderings, all aligned word by word
    assert emphasised["duration_s"] > 0.02 and emphasised["peak_energy_db"] > 0.3
    assert emphasised["f0_excursion_st"] > 0.5


def test_irony_is_slower_wider_and_draws_out_the_adjective(corpus_dir: Path) -> None:
    by_class = _differences(corpus_dir, "irony")
    ironic, sincere = by_class["ironic"], by_class["sincere"]
    assert ironic["speech_s"] > 1.3 * sincere["speech_s"]
    assert ironic["f0_range_st"] > sincere["f0_range_st"]
    assert ironic["adjective_vowel_s"] > 2 * sincere["adjective_vowel_s"]


def test_registered_with_presets() -> None:
    for name in PROSODIC:
        assert name in list_tasks()
        spec = get_task(name)
        assert spec.metric == "accuracy" and spec.higher_is_better and spec.best_value == 1.0
        assert runner.load_task_config(spec).subset == name
        assert runner.load_task_config(spec, "tiny").train.max_steps <= 200
        assert runner.load_task_config(spec, "small").train.max_steps <= 2000
        assert runner.load_task_config(spec).train.max_steps >= 30_000


@pytest.mark.parametrize("name", PROSODIC)
def test_each_task_trains_with_run_pair_on_fbank(corpus_dir: Path, tmp_path: Path, name: str) -> None:
    choice = runner.parse_upstream("fbank")
    source = FeatureSource(choice.label, runner.load_upstream_module(choice),
                           cache_root=tmp_path / "features", cache_dtype=torch.float32)
    row = runner.run_pair(name, choice, source, corpus_dir, tmp_path / "run", preset="tiny",
                          overrides=["train.max_steps=6", "train.eval_every=3"])
    assert row["task"] == name and row["upstream"] == "fbank"
    assert 0.0 <= row["dev"]["accuracy"] <= 1.0 and 0.0 <= row["test"]["accuracy"] <= 1.0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test"] == row["test"]
