"""The `vc` downstream task on a tiny parallel corpus, and `speechrep vc-eval` with PR and ASV runs trained on
the micro mini-SUPERB (MCD, PER, accept rates against target and source), plus its one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from apps_corpus import parallel_corpus

from speechrep.cli import main
from speechrep.data.batching import load_cuts
from speechrep.train import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def test_vc_task_trains_on_the_target_and_scores_mcd(tmp_path: Path) -> None:
    corpus = parallel_corpus(tmp_path / "parallel")
    out = tmp_path / "bench"
    assert main(["benchmark", "--upstream", "fbank", "--tasks", "vc", "--corpus", str(corpus), "--out",
                 str(out), "--preset", "tiny", "train.max_steps=30", "train.eval_every=15",
                 "train.log_every=1"]) == 0
    result = json.loads((out / "fbank" / "vc" / "results.json").read_text())
    assert result["metric"] == "mcd" and result["higher_is_better"] is False
    assert 0 < result["test"]["mcd"] < 100 and np.isfinite(result["dev"]["mcd"])
    losses = [r["loss"] for r in read_metrics(out / "fbank" / "vc", "train")]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert result["train_cuts"] == len(load_cuts(corpus, "vc", "train"))  # the target's speech only


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from speechrep.data.synth import make_synthetic_corpus

    corpus = tmp_path_factory.mktemp("micro")
    make_synthetic_corpus(corpus, preset="micro", subsets=["pr", "asv"], num_workers=1)
    bench = tmp_path_factory.mktemp("judges")
    assert main(["benchmark", "--upstream", "fbank", "--tasks", "pr,asv", "--corpus", str(corpus), "--out",
                 str(bench), "--preset", "tiny", "train.max_steps=6", "train.eval_every=3"]) == 0
    return corpus, bench


def test_vc_eval_reports_mcd_per_and_accept_rates(judged: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    corpus, bench = judged
    cuts = list(load_cuts(corpus, "pr", "test"))[:3]
    sources = [Path(c.recording.sources[0].source) for c in cuts]
    synth = tmp_path / "gl"
    argv = ["vocoder", "synthesize", "--vocoder", "griffin-lim", "--out", str(synth)]
    assert main(argv + [str(s) for s in sources]) == 0
    rows = ["converted\ttarget_speaker\tsource_speaker\treference\tphones"]
    speakers = []
    for cut, source in zip(cuts, sources):
        speaker = cut.supervisions[0].speaker
        rows.append(f"{synth / (source.stem + '.wav')}\t{speaker}\t{speaker}\t{source}\t"
                    + " ".join(cut.supervisions[0].custom["phones"]))
        speakers.append(f"{speaker}\t{source}")
    items, refs = tmp_path / "items.tsv", tmp_path / "speakers.tsv"
    items.write_text("\n".join(rows) + "\n")
    refs.write_text("\n".join(speakers) + "\n")
    capsys.readouterr()
    out = tmp_path / "results.json"
    assert main(["vc-eval", "--items", str(items), "--speakers", str(refs), "--corpus", str(corpus),
                 "--pr-run", str(bench / "fbank" / "pr"), "--asv-run", str(bench / "fbank" / "asv"),
                 "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    capsys.readouterr()
    assert results["items"] == len(cuts) and 0 < results["mcd_db"] < 30 and results["per"] >= 0
    for side in ("target", "source"):
        assert 0 <= results[f"{side}_accept"] <= 1 and -1 <= results[f"{side}_cosine"] <= 1
    assert 0 <= results["asv_dev_eer"] <= 1
    # without models only MCD; bad inputs are one line
    assert main(["vc-eval", "--items", str(items)]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"items", "mcd_db"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("wave\tspeaker\nx.wav\ta\n")
    missing = tmp_path / "missing.tsv"
    missing.write_text(f"converted\n{tmp_path / 'nope.wav'}\n")
    cases = [(["vc-eval", "--items", str(bad)], 2, "header"),
             (["vc-eval", "--items", str(items), "--pr-run", str(bench / "fbank" / "pr")], 2, "--corpus"),
             (["vc-eval", "--items", str(items), "--corpus", str(corpus), "--pr-run", str(tmp_path)], 2,
              "not a finished pr run")]
    for argv, code, words in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    items.write_text(f"converted\treference\n{tmp_path / 'nope.wav'}\t{sources[0]}\n")
    assert main(["vc-eval", "--items", str(items)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.wav" in err
