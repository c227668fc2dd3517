"""kNN-VC: the blocked top-k equals a full search, λ interpolates, converted features sit closer to the target
speaker's than to the source's, prematching, the one-file and manifest commands, one-line errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from apps_corpus import parallel_corpus

from speechrep.apps import knnvc
from speechrep.apps.features import FrameFeatures
from speechrep.apps.knnvc import MatchingSet, knn_convert, prematch, top_k_neighbours
from speechrep.apps.vocoder_train import train_vocoder, vocoder_config
from speechrep.audio.synthesis import dtw_path
from speechrep.cli import main
from speechrep.data.batching import load_cuts

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return parallel_corpus(tmp_path_factory.mktemp("parallel"))


def test_blocked_top_k_equals_the_full_search(monkeypatch) -> None:
    gen = torch.Generator().manual_seed(0)
    queries, frames = torch.randn(50, 8, generator=gen), torch.randn(300, 8, generator=gen)
    matching = MatchingSet.from_features([frames[:120], frames[120:]])
    full = (F.normalize(queries, dim=-1) @ F.normalize(frames, dim=-1).T).topk(4, dim=1).indices
    monkeypatch.setattr(knnvc, "QUERY_BLOCK", 7)
    monkeypatch.setattr(knnvc, "MATCH_BLOCK", 13)
    blocked = top_k_neighbours(queries, matching, 4)
    assert torch.equal(blocked.sort(1).values, full.sort(1).values)
    assert top_k_neighbours(queries, MatchingSet.from_features([frames[:2]]), 4).shape == (50, 2)


def test_lambda_interpolates_and_bad_arguments_are_config_errors() -> None:
    gen = torch.Generator().manual_seed(1)
    source, frames = torch.randn(20, 6, generator=gen), torch.randn(40, 6, generator=gen)
    matching = MatchingSet.from_features([frames])
    assert torch.equal(knn_convert(source, matching, lam=0.0), source)
    selected = knn_convert(source, matching, k=1)
    assert all(any(torch.equal(row, f) for f in frames) for row in selected)  # k = 1: a matching frame itself
    half = knn_convert(source, matching, k=2, lam=0.5)
    assert torch.allclose(half, 0.5 * knn_convert(source, matching, k=2) + 0.5 * source)
    assert torch.equal(knn_convert(source, matching, 3), knn_convert(source, matching, 3))  # deterministic
    for kwargs, words in (({"k": 0}, "k must be"), ({"lam": 1.5}, "lambda")):
        with pytest.raises(ValueError, match=words):
            knn_convert(source, matching, **kwargs)
    with pytest.raises(ValueError, match="dimensions"):
        knn_convert(torch.randn(3, 5), matching)


@pytest.mark.parametrize("features", [("logmel", None), ("hubert_tiny", 1)])
def test_converted_features_are_closer_to_the_target_speaker(corpus: Path, features) -> None:
    extractor = FrameFeatures(*features)
    own = load_cuts(corpus, "vc_pool", "train")
    shared = load_cuts(corpus, "vc_pool", "dev")
    speakers = sorted({c.supervisions[0].speaker for c in own})
    feats = {c.id: extractor.features(torch.from_numpy(c.load_audio()[0])) for c in list(own) + list(shared)}
    by_speaker = {s: [feats[c.id] for c in own if c.supervisions[0].speaker == s] for s in speakers}

    by_sentence = {(c.supervisions[0].speaker, c.supervisions[0].custom["sentence"][1]): feats[c.id]
                   for c in shared}

    def aligned_distance(a: torch.Tensor, b: torch.Tensor) -> float:
        """Mean cosine distance of two frame sequences along their DTW path."""
        costs = (1 - F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T).double().numpy()
        rows, cols = dtw_path(costs)
        return float(costs[rows, cols].mean())

    gains = []
    for source in speakers:
        for target in speakers:
            if target == source:
                continue
            matching = MatchingSet.from_features(by_speaker[target])  # own sentences: no shared one
            for (speaker, sentence), original in by_sentence.items():
                if speaker == source:
                    parallel = by_sentence[(target, sentence)]  # the target saying it: never matched against
                    converted = knn_convert(original, matching, k=4)
                    gains.append(aligned_distance(original, parallel) - aligned_distance(converted, parallel))
    gains = torch.tensor(gains)
    # closer to the target's rendition of the same sentence than the source's own frames are
    assert (gains > 0).float().mean() >= 0.9 and gains.mean() > 0


def test_prematching_matches_only_other_utterances_of_the_speaker() -> None:
    gen = torch.Generator().manual_seed(2)
    features = {f"u{i}": torch.randn(10, 4, generator=gen) for i in range(4)}
    speakers = {"u0": "a", "u1": "a", "u2": "b", "u3": "c"}
    matched = prematch(features, speakers, k=1)
    assert all(any(torch.equal(row, f) for f in features["u1"]) for row in matched["u0"])
    assert torch.equal(matched["u3"], features["u3"])  # no other utterance of speaker c
    assert set(matched) == set(features)


@pytest.fixture(scope="module")
def vocoder_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("vocoder")
    cfg = vocoder_config("tiny", ["subset=vc_pool", "features=hubert_tiny:1", "prematched=true",
                                  "train.max_steps=4", "train.eval_every=2"])
    train_vocoder(cfg, corpus, run)
    return run


def test_vc_commands_convert_files_and_manifests(corpus: Path, vocoder_run: Path, tmp_path: Path,
                                                 capsys) -> None:
    audio = corpus / "audio"
    source = audio / "vc_spk001" / "vc_spk001_shared000.flac"
    references = sorted((audio / "vc_spk002").glob("*_own*.flac"))
    out = tmp_path / "one.wav"
    argv = ["vc", "--vocoder", str(vocoder_run), "--source", str(source), "--out", str(out), "--k", "2"]
    assert main(argv + [x for r in references for x in ("--reference", str(r))]) == 0
    assert out.is_file()
    pairs, speakers = tmp_path / "pairs.tsv", tmp_path / "speakers.tsv"
    pairs.write_text(f"{source}\tvc_spk002\n{audio / 'vc_spk002' / 'vc_spk002_shared001.flac'}\tvc_spk003\t"
                     f"b.wav\n{tmp_path / 'missing.wav'}\tvc_spk003\n")
    speakers.write_text("".join(f"vc_spk00{s}\t{r}\n" for s in (2, 3)
                                for r in sorted((audio / f"vc_spk00{s}").glob("*_own*.flac"))))
    batch = tmp_path / "batch"
    argv = ["vc", "--vocoder", str(vocoder_run), "--pairs", str(pairs), "--speakers", str(speakers),
            "--out", str(batch)]
    assert main(argv) == 1  # one source is missing: reported, the others converted
    assert "1 failed" in capsys.readouterr().err
    assert {p.name for p in batch.glob("*.wav")} == {"vc_spk001_shared000_to_vc_spk002.wav", "b.wav"}
    assert main(argv) == 1 and "2 already done" in capsys.readouterr().err  # resumes, converts nothing again
    cases = [
        (["vc", "--vocoder", str(vocoder_run), "--source", str(source), "--out", str(out)], 2, "--reference"),
        (["vc", "--vocoder", str(vocoder_run), "--layer", "0", "--source", str(source), "--reference",
          str(source), "--out", str(out)], 2, "trained on 1"),
        (["vc", "--vocoder", str(vocoder_run), "--source", str(source), "--reference",
          str(tmp_path / "no.wav"), "--out", str(out)], 1, "no.wav"),
        (["vc", "--vocoder", str(vocoder_run), "--source", str(source), "--reference", str(source),
          "--lambda", "2", "--out", str(out)], 2, "lambda"),
    ]
    for argv, code, words in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
