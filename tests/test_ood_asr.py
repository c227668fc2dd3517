"""OOD-ASR (SUPERB-SG): the opt-in synthetic `ood_asr` subset (micro preset: es, de, fr and spontaneous
English), the `ood_asr` task (one ASR head per domain, mean CER) end to end, and the Common Voice and SBCSAE
recipes on tiny trees written here in their published layouts."""
from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from speechrep.cli import main
from speechrep.data.recipes import CorpusLayoutError, prepare_corpus
from speechrep.data.synth import OPT_IN_SUBSETS, PRESETS, SUBSETS, make_synthetic_corpus
from speechrep.data.synth.domains import FILLERS
from speechrep.data.synth.hear_tasks import LANGUAGES, _vocabulary
from speechrep.data.synth.subsets import OOD_ASR_DOMAINS, OOD_ASR_LANGUAGES
from speechrep.downstream import runner
from speechrep.downstream.ctc import char_tokens
from speechrep.downstream.features import FeatureSource
from speechrep.downstream.tasks import get_task
from speechrep.downstream.tasks.asr import transcript_of
from speechrep.errors import ConfigError
from speechrep.train import read_metrics

SPLITS = ("train", "dev", "test")
FAST = ["train.max_steps=30", "train.eval_every=15"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ood_asr") / "corpus"
    make_synthetic_corpus(out, preset="micro", seed=0, subsets=["ood_asr"], num_workers=2)
    return out


def _cuts(corpus: Path, domain: str, split: str) -> CutSet:
    return CutSet.from_file(corpus / "ood_asr" / domain / f"{split}.jsonl.gz")


def _manifest_lines(path: Path, root: Path) -> list[str]:
    return gzip.open(path, "rt").read().replace(str(root), "ROOT").splitlines()


# ----------------------------------------------------------------------------------------- synthetic subset

def test_ood_asr_is_opt_in() -> None:
    assert "ood_asr" not in SUBSETS and OPT_IN_SUBSETS[3] == "ood_asr"  # the default corpus is unchanged
    assert OOD_ASR_DOMAINS == ("es", "de", "fr", "spontaneous")
    assert PRESETS["small"]["ood_asr"] == PRESETS["small"]["asr"]  # per domain, like asr


def test_one_corpus_per_domain_with_disjoint_speakers(corpus: Path) -> None:
    speakers, counts = PRESETS["micro"]["ood_asr"]
    flat = {split: CutSet.from_file(corpus / "ood_asr" / f"{split}.jsonl.gz") for split in SPLITS}
    for split, count in zip(SPLITS, counts):
        assert len(flat[split]) == count * len(OOD_ASR_DOMAINS)  # every domain's cuts, `custom.domain` each
    for domain in OOD_ASR_DOMAINS:
        by_split = {split: _cuts(corpus, domain, split) for split in SPLITS}
        for (split, cuts), count, talkers in zip(by_split.items(), counts, speakers):
            assert len(cuts) == count and {c.custom["domain"] for c in cuts} == {domain}
            assert all(c.id.startswith(f"ood_asr_{domain}_{split}_") for c in cuts)
            assert len({c.supervisions[0].speaker for c in cuts}) == talkers
        spk = {split: {c.supervisions[0].speaker for c in cuts} for split, cuts in by_split.items()}
        assert not (spk["train"] & spk["dev"] or spk["train"] & spk["test"] or spk["dev"] & spk["test"])


def test_languages_are_spoken_by_their_own_voices_with_their_own_characters(corpus: Path) -> None:
    card = json.loads((corpus / "ood_asr" / "card.json").read_text())
    voice = {s["id"]: s["voice"] for split in SPLITS for s in card["speakers"][split]}
    non_ascii = set()
    for lang in OOD_ASR_LANGUAGES:
        letters = set("".join(_vocabulary(lang)[0]))
        for split in SPLITS:
            for cut in _cuts(corpus, lang, split):
                sup = cut.supervisions[0]
                assert sup.language == lang and not sup.custom  # no (English) phone labels
                assert voice[sup.speaker].split("+")[0] in LANGUAGES[lang]  # es, es-419; de; fr, fr-be, ...
                assert sup.text == sup.text.lower() and 4 <= len(sup.text.split()) <= 14
                assert set(sup.text) - {" "} <= letters, sup.text
                non_ascii |= {ch for ch in sup.text if not ch.isascii()}
                assert cut.load_audio().shape[1] > 0.5 * 16000
    assert non_ascii  # accented letters (é, ñ, ü, ...) stay in the transcripts, so in each head's vocabulary


def test_spontaneous_english_has_fillers_and_verbatim_transcripts(corpus: Path) -> None:
    card = json.loads((corpus / "ood_asr" / "card.json").read_text())
    voice = {s["id"]: s["voice"] for split in SPLITS for s in card["speakers"][split]}
    for split in SPLITS:
        for cut in _cuts(corpus, "spontaneous", split):
            sup = cut.supervisions[0]
            assert sup.language == "en" and voice[sup.speaker].startswith("en")
            assert "<" not in sup.text and sup.text.replace(" ", "").isalpha()  # no SSML in the transcript
            assert any(f" {f} " in f" {sup.text} " for f in FILLERS), sup.text
            assert [w for w, _, _ in sup.custom["word_alignment"]] and sup.custom["phones"]


def test_subset_is_deterministic(corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_synthetic_corpus(again, preset="micro", seed=0, subsets=["ood_asr"], num_workers=1)
    for path in [Path(f"{s}.jsonl.gz") for s in SPLITS] + [Path(d, f"{s}.jsonl.gz") for d in OOD_ASR_DOMAINS
                                                            for s in SPLITS]:
        assert (_manifest_lines(again / "ood_asr" / path, again)
                == _manifest_lines(corpus / "ood_asr" / path, corpus)), path
    first = sorted((corpus / "ood_asr" / "audio").iterdir())
    assert [p.name for p in first] == sorted(p.name for p in (again / "ood_asr" / "audio").iterdir())
    assert all(p.read_bytes() == (again / "ood_asr" / "audio" / p.name).read_bytes() for p in first)


# ---------------------------------------------------------------------------------------------------- task

def test_registered_with_presets() -> None:
    spec = get_task("ood_asr")
    assert spec.metric == "cer" and not spec.higher_is_better and spec.best_value == 0.0 and spec.frame_level
    cfg = runner.load_task_config(spec)
    assert cfg.subset == "ood_asr" and cfg.domains == list(OOD_ASR_DOMAINS)
    assert cfg.train.max_steps >= 30_000 and runner.load_task_config(spec, "tiny").train.max_steps <= 200
    assert {p: runner.load_task_config(spec, p).hidden_size for p in ("small", "demo")} == {"small": 128,
                                                                                           "demo": 128}
    assert list(spec.sub_runs(cfg)) == list(OOD_ASR_DOMAINS)
    with pytest.raises(ConfigError, match="distinct"):
        spec.sub_runs(runner.load_task_config(spec, overrides=["domains=[es, es]"]))


def test_each_domain_gets_its_own_vocabulary(corpus: Path) -> None:
    spec = get_task("ood_asr")
    cfg = runner.load_task_config(spec, "tiny")
    choice = runner.parse_upstream("fbank")
    source = FeatureSource(choice.label, runner.load_upstream_module(choice), cache_root=None)
    for domain, sub_cfg in spec.sub_runs(cfg).items():
        parts = spec.build(sub_cfg, corpus, source)
        symbols = {t for c in parts.train_cuts for t in char_tokens(transcript_of(c))}
        assert {c.custom["domain"] for c in parts.train_cuts} == {domain}
        assert parts.head.projection.out_features == 2 + len(symbols)  # blank, <unk>, the domain's characters


def test_task_trains_one_head_per_domain_and_reports_the_mean(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    rows = runner.benchmark(runner.BenchmarkConfig(["hubert_tiny"], ["ood_asr"], corpus, out, preset="tiny",
                                                   overrides=["train.max_steps=40", "train.eval_every=20",
                                                              "train.log_every=1"]))
    row = json.loads((out / "hubert_tiny" / "ood_asr" / "results.json").read_text())
    assert rows[0]["test"] == row["test"] and row["metric"] == "cer"
    assert set(row["sub_runs"]) == set(OOD_ASR_DOMAINS)  # results.json keeps its keys sorted
    for split in ("dev", "test"):
        for metric in ("cer", "wer"):
            per_domain = [row["sub_runs"][d][split][metric] for d in OOD_ASR_DOMAINS]
            assert all(v >= 0.0 for v in per_domain)
            assert row[split][metric] == pytest.approx(statistics.mean(per_domain))
    for domain in OOD_ASR_DOMAINS:
        run = out / "hubert_tiny" / "ood_asr" / domain
        assert json.loads((run / "results.json").read_text())["test"] == row["sub_runs"][domain]["test"]
        weights = row["sub_runs"][domain]["layer_weights"]  # each domain's own weighted sum of the 3 layers
        assert len(weights) == 3 and sum(weights) == pytest.approx(1.0, abs=1e-4)
        losses = [r["loss"] for r in read_metrics(run, "train")]
        assert len(losses) == 40 and np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8]), (domain, losses)


def test_a_missing_domain_is_a_one_line_error_before_anything_trains(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    argv = ["benchmark", "--upstream", "fbank", "--tasks", "ood_asr", "--corpus", str(corpus), "--out",
            str(out), "--preset", "tiny", "ood_asr.domains=[es, zh-CN]", *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no domain 'zh-CN'" in err[0] and "found: de, es, fr, spontaneous" in err[0]
    assert not (out / "fbank" / "ood_asr" / "es" / "results.json").exists()


# ------------------------------------------------------------------------------------------------- recipes

def write_mp3(path: Path, seconds: float, seed: int, sr: int = 48000) -> None:
    """Low-level noise as MP3 (Common Voice's clips are 48 kHz MP3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.random.default_rng(seed).uniform(-0.1, 0.1, int(seconds * sr)).astype(np.float32)
    sf.write(path, audio, sr, format="MP3")


CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"
CV_SENTENCES = {  # lang -> split -> [(clip, sentence)]
    "es": {"train": [("a.mp3", "¿Qué tal, amigo?"), ("b.mp3", "Él dijo: «sí».")],
           "dev": [("c.mp3", "Niño pequeño.")], "test": [("d.mp3", "Hola “mundo”!"), ("gone.mp3", "Falta.")]},
    "zh-CN": {"train": [("a.mp3", "你好，世界。"), ("b.mp3", "我爱Python。"), ("e.mp3", "早上好")],
              "dev": [("c.mp3", "再 见")], "test": [("d.mp3", "谢谢！")]},
    "ar": {"train": [("a.mp3", "مرحبا، كيف حالك؟")], "dev": [("b.mp3", "شكرا.")],
           "test": [("c.mp3", "نعم!")]},
}


def build_common_voice(root: Path) -> None:
    """A release folder: <lang>/clips/*.mp3 and <lang>/{train,dev,test}.tsv (`gone.mp3` is not there)."""
    seed = 0
    for lang, splits in CV_SENTENCES.items():
        for split, rows in splits.items():
            lines = [CV_HEADER]
            for clip, sentence in rows:
                name = f"common_voice_{lang}_{split}_{clip}"
                if clip != "gone.mp3":
                    write_mp3(root / lang / "clips" / name, 1.0 + 0.1 * seed, seed)
                seed += 1
                lines.append(f"client{seed % 2}\t{name}\t{sentence}\t2\t0\t\t\t\t{lang}\t")
            (root / lang / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_sbcsae(root: Path) -> None:
    """SBCSAE-preprocess output: wav/SBC<nnn>_<start>-<end>.wav and {train,dev,test}.tsv (path, sentence)."""
    rows = {"train": [("SBC001_000000-000120.wav", "AM I DOING THAT RIGHT"),
                      ("SBC046_001500-001610.wav", "WELL I GUESS THAT'S IT")],
            "dev": [("SBC047_000100-000230.wav", "YEAH")],
            "test": [("SBC054_010000-010150.wav", "UH HUH SURE")]}
    for i, (split, items) in enumerate(rows.items()):
        for k, (name, _) in enumerate(items):
            path = root / "wav" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            noise = np.random.default_rng(10 * i + k).uniform(-0.1, 0.1, 16000).astype(np.float32)
            sf.write(path, noise, 16000)
        (root / f"{split}.tsv").write_text("path\tsentence\n" + "".join(f"{n}\t{s}\n" for n, s in items))


def test_common_voice(tmp_path: Path) -> None:
    build_common_voice(tmp_path / "cv")
    out = tmp_path / "out"
    es = prepare_corpus("common_voice", tmp_path / "cv", out, lang="es")["ood_asr/es"]
    assert [c.supervisions[0].text for c in es["train"]] == ["qué tal amigo", "él dijo sí"]
    assert [c.supervisions[0].text for c in es["test"]] == ["hola mundo"]  # the missing clip is left out
    assert "gone.mp3" in (out / "skipped_common_voice.txt").read_text()
    cut = es["train"][0]
    assert cut.supervisions[0].language == "es" and cut.supervisions[0].speaker == "client1"
    assert cut.id == "common_voice_es_train_a" and cut.sampling_rate == 16000
    assert abs(cut.load_audio().shape[1] - 16000) < 1200  # 1 s of MP3 at 48 kHz, read at 16 kHz
    zh = prepare_corpus("common_voice", tmp_path / "cv", out, lang="zh-CN")["ood_asr/zh-CN"]
    # no spaces; the sentence with Latin letters is dropped
    assert [c.supervisions[0].text for s in SPLITS for c in zh[s]] == ["你好世界", "早上好", "再见", "谢谢"]
    ar = prepare_corpus("common_voice", tmp_path / "cv" / "ar", out)["ood_asr/ar"]  # the language folder
    assert ar["train"][0].supervisions[0].text == "مرحبا كيف حالك"
    for lang in ("es", "zh-CN", "ar"):
        assert all((out / "ood_asr" / lang / f"{s}.jsonl.gz").is_file() for s in SPLITS)


def test_common_voice_layout_errors(tmp_path: Path) -> None:
    build_common_voice(tmp_path / "cv")
    with pytest.raises(CorpusLayoutError, match="Common Voice language folder 'fr'"):
        prepare_corpus("common_voice", tmp_path / "cv", None, lang="fr")
    with pytest.raises(CorpusLayoutError, match="give the language"):
        prepare_corpus("common_voice", tmp_path / "cv", None)
    (tmp_path / "cv" / "es" / "dev.tsv").write_text("client_id\tpath\ttext\nc\tx.mp3\thola\n")
    with pytest.raises(CorpusLayoutError, match=r"dev.tsv: .* without a 'sentence' column"):
        prepare_corpus("common_voice", tmp_path / "cv", None, lang="es")
    with pytest.raises(ConfigError, match="only common_voice take --lang"):
        prepare_corpus("sbcsae", tmp_path / "cv", None, lang="es")


def test_sbcsae(tmp_path: Path) -> None:
    build_sbcsae(tmp_path / "sbc")
    cuts = prepare_corpus("sbcsae", tmp_path / "sbc", tmp_path / "out")["ood_asr/sbcsae"]
    assert [c.supervisions[0].text for c in cuts["train"]] == ["am i doing that right",
                                                                "well i guess that's it"]
    sup = cuts["test"][0].supervisions[0]
    assert sup.speaker == "SBC054" and sup.custom == {"conversation": "SBC054", "start": 100.0, "end": 101.5}
    assert all((tmp_path / "out" / "ood_asr" / "sbcsae" / f"{s}.jsonl.gz").is_file() for s in SPLITS)
    (tmp_path / "sbc" / "wav" / "SBC047_000100-000230.wav").unlink()
    with pytest.raises(CorpusLayoutError, match="dev: no usable utterances"):
        prepare_corpus("sbcsae", tmp_path / "sbc", None)


def test_the_task_runs_on_the_recipes_from_the_cli(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    build_common_voice(tmp_path / "cv")
    build_sbcsae(tmp_path / "sbc")
    corpus = tmp_path / "corpus"
    assert main(["prepare", "common_voice", "--lang", "zh-CN", "--corpus-dir", str(tmp_path / "cv"),
                 "--out", str(corpus)]) == 0
    assert f"{corpus / 'ood_asr' / 'zh-CN' / 'train'}.jsonl.gz: 2 cuts" in capsys.readouterr().out
    assert main(["prepare", "sbcsae", "--corpus-dir", str(tmp_path / "sbc"), "--out", str(corpus)]) == 0
    out = tmp_path / "bench"
    assert main(["benchmark", "--upstream", "fbank", "--tasks", "ood_asr", "--corpus", str(corpus), "--out",
                 str(out), "--preset", "tiny", "ood_asr.domains=[zh-CN, sbcsae]", "train.max_steps=4",
                 "train.eval_every=2"]) == 0
    row = json.loads((out / "fbank" / "ood_asr" / "results.json").read_text())
    assert set(row["sub_runs"]) == {"zh-CN", "sbcsae"} and set(row["test"]) == {"cer", "wer"}
