"""ST (SUPERB-SG speech translation): the English → Zelan translator's rules, the opt-in synthetic `st`
subset, subword targets, BLEU, greedy and beam decoding, the `st` task end to end, and the CoVoST 2 En→De
recipe on tiny trees written here in its published layout."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import soundfile as sf
import torch
from lhotse import CutSet

from speechrep.cli import main
from speechrep.data.recipes import CorpusLayoutError, prepare_corpus
from speechrep.data.synth import OPT_IN_SUBSETS, PRESETS, SUBSETS, make_synthetic_corpus
from speechrep.data.synth import translation as zl
from speechrep.data.synth.translation import Clause, Phrase, Sentence, english, translate
from speechrep.downstream import runner
from speechrep.downstream.metrics.translation import bleu_signature, corpus_bleu
from speechrep.downstream.seq2seq import (
    EOS_ID,
    SubwordModel,
    TransformerDecoderHead,
    beam_search,
    greedy_decode,
    teacher_forcing,
)
from speechrep.downstream.tasks import get_task
from speechrep.train import read_metrics

SPLITS = ("train", "dev", "test")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("st") / "corpus"
    make_synthetic_corpus(out, preset="tiny", seed=0, subsets=["st"], num_workers=1)
    return out


def _cuts(corpus: Path, split: str) -> CutSet:
    return CutSet.from_file(corpus / "st" / f"{split}.jsonl.gz")


# ------------------------------------------------------------------------------------------------ translator

DOG, APPLE, GARDEN = ("dog", "dogs"), ("apple", "apples"), ("garden", "gardens")


def test_main_clause_reorders_adjectives_and_the_adverb_and_agrees() -> None:
    s = Sentence(Clause(Phrase("the", DOG, False, "big"), ("eats", "eat"), Phrase("two", APPLE, True, "red"),
                        ("in", Phrase("the", GARDEN, False)), "quickly"))
    assert english(s) == "the big dog eats two red apples in the garden quickly"
    # adjective after the noun (m: -o, plural: -i), adverb after the verb, plural noun -en, verb -t
    assert translate(s) == "lo hund grando mangat rapi dva apelen rubi in la garda"


def test_clause_after_that_is_verb_final_and_plural_subjects_agree() -> None:
    s = Sentence(Clause(Phrase("a", ("woman", "women"), False), ("reads", "read"),
                        Phrase("the", ("book", "books"), True, "old"), None, "today"),
                 saying=(Phrase("the", ("child", "children"), True), ("says", "say")))
    assert english(s) == "the children say that a woman reads the old books today"
    # plural subject: `li`, -n after a vowel, verb -n; then `ke` S ADV O V
    assert translate(s) == "li kindon dikan ke una dama oje li libron veti legat"


def test_articles_and_adjectives_agree_with_gender() -> None:
    def object_of(phrase: Phrase) -> str:
        sentence = Sentence(Clause(Phrase("the", DOG, False), ("sees", "see"), phrase))
        return translate(sentence).split(" ", 3)[3]

    assert object_of(Phrase("a", ("house", "houses"), False, "small")) == "una kasa pika"  # f
    assert object_of(Phrase("a", ("egg", "eggs"), False, "small")) == "une ovo pike"  # n
    assert object_of(Phrase("the", ("egg", "eggs"), False, "small")) == "le ovo pike"
    assert object_of(Phrase("the", ("house", "houses"), True, "small")) == "li kasan piki"
    assert object_of(Phrase("a", ("key", "keys"), False)) == "un klav"  # m


def test_grammar_has_a_few_hundred_word_types_and_is_not_word_for_word() -> None:
    rng = np.random.default_rng(0)
    pairs = [zl.st_pair(rng) for _ in range(3000)]
    english_types = {w for e, _ in pairs for w in e.split()}
    assert 200 <= len(english_types) <= 300 and len({w for _, t in pairs for w in t.split()}) > 250
    verbs = {stem + ending for stem in zl.VERBS.values() for ending in "tn"}
    subordinate = [t for _, t in pairs if " ke " in t]
    assert len(subordinate) > 500 and all(t.split()[-1] in verbs for t in subordinate)  # verb-final
    assert sum(e.split()[-1] in zl.ADVERBS and t.split()[-1] not in zl.ADVERBS.values()
               for e, t in pairs) > 500  # the adverb moves


# ---------------------------------------------------------------------------------------- synthetic subset

def test_st_is_opt_in_and_sized_like_asr() -> None:
    assert "st" not in SUBSETS and "st" in OPT_IN_SUBSETS  # the default corpus is unchanged
    assert PRESETS["small"]["st"] == PRESETS["small"]["asr"]


def test_subset_has_translations_and_disjoint_speakers(corpus: Path) -> None:
    speakers, counts = PRESETS["tiny"]["st"]
    by_split = {split: _cuts(corpus, split) for split in SPLITS}
    for (split, cuts), count, talkers in zip(by_split.items(), counts, speakers):
        assert len(cuts) == count and len({c.supervisions[0].speaker for c in cuts}) == talkers
        for cut in cuts:
            sup = cut.supervisions[0]
            assert sup.language == "en" and sup.custom["target_language"] == "zl"
            assert sup.text.split()[0] in ("the", "a") and sup.custom["translation"].split()[0] in (
                *zl.DEFINITE.values(), *zl.INDEFINITE.values())
            assert sup.custom["phones"] and cut.load_audio().shape[1] > 16000
    spk = {split: {c.supervisions[0].speaker for c in cuts} for split, cuts in by_split.items()}
    assert not (spk["train"] & spk["dev"] or spk["train"] & spk["test"] or spk["dev"] & spk["test"])


def test_subset_is_deterministic(corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_synthetic_corpus(again, preset="tiny", seed=0, subsets=["st"], num_workers=1)
    for split in SPLITS:
        lines = [gzip.open(root / "st" / f"{split}.jsonl.gz", "rt").read().replace(str(root), "ROOT")
                 for root in (corpus, again)]
        assert lines[0] == lines[1]
    first = sorted((corpus / "st" / "audio").iterdir())
    assert all(p.read_bytes() == (again / "st" / "audio" / p.name).read_bytes() for p in first)


# ------------------------------------------------------------------------------------- subwords, BLEU, search

def test_subword_model_round_trips_and_is_saved(corpus: Path, tmp_path: Path) -> None:
    sentences = [c.supervisions[0].custom["translation"] for c in _cuts(corpus, "train")]
    model = SubwordModel.train(sentences, vocab_size=60)
    assert SubwordModel.train(sentences, vocab_size=60).proto == model.proto  # deterministic
    assert len(model) <= 60
    for sentence in sentences:
        assert model.decode(model.encode(sentence)) == sentence
    assert any(len(model.pieces(s)) > len(s.split()) for s in sentences)  # pieces below the word
    loaded = spm.SentencePieceProcessor(model_file=str(model.save(tmp_path / "subwords.model")))
    assert loaded.encode(sentences[0]) == model.encode(sentences[0])
    inputs, outputs = teacher_forcing([[5, 6], [7]], torch.device("cpu"))
    assert inputs.tolist() == [[2, 5, 6], [2, 7, 0]] and outputs.tolist() == [[5, 6, EOS_ID], [7, EOS_ID, 0]]


def test_bleu_hand_cases() -> None:
    refs = ["lo hund mangat una kasa", "li pikan scian ke un puer una bola sekvat"]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert corpus_bleu(["x y z w", "x y z w v"], refs) == 0.0
    assert 0.0 < corpus_bleu(["lo hund mangat una kasa", "li pikan scian"], refs) < 100.0
    signature = bleu_signature()
    assert "tok:13a" in signature and "nrefs:1" in signature and "version:2." in signature


def test_beam_of_one_is_greedy_and_beams_return_sequences() -> None:
    torch.manual_seed(0)
    head = TransformerDecoderHead(24, 30, d_model=32, num_layers=2, num_heads=2, ffn_dim=64,
                                  dropout=0.0).eval()
    features, lengths = torch.randn(4, 40, 24), torch.tensor([40, 33, 21, 9])
    with torch.no_grad():
        memory, memory_lengths = head(features, lengths)
        assert memory_lengths.tolist() == [20, 17, 11, 5]  # 2x subsampling
        greedy = greedy_decode(head, memory, memory_lengths, max_len=12)
        assert beam_search(head, memory, memory_lengths, beam_size=1, max_len=12) == greedy
        wide = beam_search(head, memory, memory_lengths, beam_size=4, max_len=12)
    assert len(wide) == 4 and all(len(h) <= 12 and EOS_ID not in h for h in wide)


# ------------------------------------------------------------------------------------------------------ task

def test_registered_with_presets() -> None:
    spec = get_task("st")
    assert spec.metric == "bleu" and spec.higher_is_better and spec.best_value == 100.0
    cfg = runner.load_task_config(spec)
    assert cfg.subset == "st" and cfg.beam_size == 5 and cfg.label_smoothing == 0.1
    for preset in ("tiny", "small", "demo"):
        assert runner.load_task_config(spec, preset).train.max_steps <= 3000


def test_task_end_to_end(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    runner.benchmark(runner.BenchmarkConfig(["fbank"], ["st"], corpus, out, preset="tiny",
                                            overrides=["train.max_steps=100", "train.log_every=1"]))
    run = out / "fbank" / "st"
    row = json.loads((run / "results.json").read_text())
    losses = [r["loss"] for r in read_metrics(run, "train")]
    assert len(losses) == 100 and np.mean(losses[-10:]) < 0.85 * np.mean(losses[:10]), losses
    sources = {split: [c.supervisions[0].text for c in _cuts(corpus, split)] for split in ("dev", "test")}
    refs = {split: [c.supervisions[0].custom["translation"] for c in _cuts(corpus, split)]
            for split in ("dev", "test")}
    for split in ("dev", "test"):
        assert set(row[split]) == {"bleu", "bleu_greedy", "copy_source_bleu"}
        assert all(0.0 <= v <= 100.0 for v in row[split].values())
        assert row[split]["copy_source_bleu"] == pytest.approx(corpus_bleu(sources[split], refs[split]))
    assert row["task_info"]["bleu_signature"] == bleu_signature()
    subwords = spm.SentencePieceProcessor(model_file=str(run / "subwords.model"))
    assert subwords.get_piece_size() == row["task_info"]["subwords"] <= 60


# --------------------------------------------------------------------------------------------------- recipe

def write_mp3(path: Path, seconds: float, seed: int, sr: int = 48000) -> None:
    """Low-level noise as MP3 (Common Voice's clips are 48 kHz MP3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.random.default_rng(seed).uniform(-0.1, 0.1, int(seconds * sr)).astype(np.float32)
    sf.write(path, audio, sr, format="MP3")


COVOST = [  # path, sentence, translation, client_id, split
    ("common_voice_en_1.mp3", "The cat sleeps.", "Die Katze schläft.", "c1", "train"),
    ("common_voice_en_2.mp3", 'He said \\"no\\".', 'Er sagte \\"nein\\".', "c2", "train_covost"),
    ("common_voice_en_3.mp3", "Good  morning!", "Guten Morgen!", "c3", "dev"),
    ("common_voice_en_4.mp3", "Thank you.", "Danke.", "c4", "test"),
    ("common_voice_en_gone.mp3", "Missing.", "Fehlt.", "c4", "test"),
]


def build_covost(root: Path, joined: bool) -> None:
    """The Common Voice English folder with CoVoST 2's covost_v2.en_de.tsv beside clips/ (`joined`: sentence
    and client_id from validated.tsv), or the split files of get_covost_splits.py."""
    for i, (path, *_) in enumerate(COVOST):
        if "gone" not in path:
            write_mp3(root / "clips" / path, 1.0, i)
    if joined:
        (root / "covost_v2.en_de.tsv").write_text(
            "path\ttranslation\tsplit\n" + "".join(f"{p}\t{t}\t{s}\n" for p, _, t, _, s in COVOST))
        (root / "validated.tsv").write_text("client_id\tpath\tsentence\tup_votes\n" + "".join(
            f"{c}\t{p}\t{e}\t2\n" for p, e, _, c, _ in COVOST))
        return
    for split, names in (("train", ("train", "train_covost")), ("dev", ("dev",)), ("test", ("test",))):
        (root / f"covost_v2.en_de.{split}.tsv").write_text(
            "path\tsentence\ttranslation\tclient_id\n"
            + "".join(f"{p}\t{e}\t{t}\t{c}\n" for p, e, t, c, s in COVOST if s in names))


@pytest.mark.parametrize("joined", [True, False])
def test_covost2(tmp_path: Path, joined: bool) -> None:
    build_covost(tmp_path / "en", joined)
    cuts = prepare_corpus("covost2", tmp_path / "en", tmp_path / "out")["st"]
    train = [(c.supervisions[0].text, c.supervisions[0].custom["translation"]) for c in cuts["train"]]
    assert train == [("The cat sleeps.", "Die Katze schläft."), ('He said "no".', 'Er sagte "nein".')]
    assert [c.supervisions[0].text for c in cuts["dev"]] == ["Good morning!"]
    assert [c.id for c in cuts["test"]] == ["common_voice_en_4"]  # the missing clip is left out
    assert "common_voice_en_gone.mp3" in (tmp_path / "out" / "skipped_covost2.txt").read_text()
    sup = cuts["test"][0].supervisions[0]
    assert sup.speaker == "c4" and sup.custom["target_language"] == "de" and sup.language == "en"
    assert abs(cuts["test"][0].load_audio().shape[1] - 16000) < 1200
    assert all((tmp_path / "out" / "st" / f"{s}.jsonl.gz").is_file() for s in SPLITS)


def test_covost2_layout_error(tmp_path: Path) -> None:
    (tmp_path / "en" / "clips").mkdir(parents=True)
    with pytest.raises(CorpusLayoutError, match="covost_v2.en_de.tsv"):
        prepare_corpus("covost2", tmp_path / "en", None)


def test_the_task_runs_on_the_recipe_from_the_cli(tmp_path: Path) -> None:
    build_covost(tmp_path / "en", joined=True)
    corpus = tmp_path / "corpus"
    assert main(["prepare", "covost2", "--corpus-dir", str(tmp_path / "en"), "--out", str(corpus)]) == 0
    out = tmp_path / "bench"
    assert main(["benchmark", "--upstream", "fbank", "--tasks", "st", "--corpus", str(corpus), "--out",
                 str(out), "--preset", "tiny", "train.max_steps=4", "train.eval_every=2"]) == 0
    row = json.loads((out / "fbank" / "st" / "results.json").read_text())
    assert set(row["test"]) == {"bleu", "bleu_greedy", "copy_source_bleu"}
