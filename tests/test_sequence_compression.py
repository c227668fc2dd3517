"""Sequence compression: segment helpers, the compressed MelHuBERT upstream, its pre-training and export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_corpus import first_batch, unlabeled_corpus

from speechrep.data.boundaries import BoundarySource, alignment_boundaries, read_boundaries
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.nn.segments import (
    boundary_segment_ids,
    expand_segments,
    fit_segment_count,
    fixed_segment_ids,
    frames_at_times,
    pad_segment_ids,
    segment_frame_spans,
    segment_majority,
    segment_means,
    unit_segment_ids,
)
from speechrep.pretrain import method_config, run_method
from speechrep.pretrain.kmeans import IGNORE, ClusterLabels, run_kmeans
from speechrep.pretrain.melhubert import MelHuBERTObjective
from speechrep.upstream import load_upstream
from speechrep.upstream.base import on_frame_grid


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def labels(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seqcomp_labels") / "fbank"
    run_kmeans("fbank", corpus, 8, out, seed=0)
    return out


# --- segment helpers ---------------------------------------------------------------------------------------


def test_segment_ids_from_lengths_units_and_boundaries() -> None:
    assert fixed_segment_ids(7, 3).tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert unit_segment_ids(torch.tensor([5, 5, 2, 2, 2, 5, 1])).tolist() == [0, 0, 1, 1, 1, 2, 3]
    assert boundary_segment_ids([0, 2, 5, 9], 7).tolist() == [0, 0, 1, 1, 1, 2, 2]


def test_fit_segment_count_merges_the_shortest_and_splits_the_longest() -> None:
    ids = torch.tensor([0, 1, 1, 1, 2, 2, 3, 3, 3, 3])  # sizes 1, 3, 2, 4
    assert torch.bincount(fit_segment_count(ids, 3)).tolist() == [4, 2, 4]  # the 1 joins its only neighbour
    assert torch.bincount(fit_segment_count(ids, 2)).tolist() == [6, 4]  # equal neighbours: the left one
    assert torch.bincount(fit_segment_count(ids, 5)).tolist() == [1, 3, 2, 2, 2]  # the 4 is halved
    assert fit_segment_count(ids, 50).tolist() == list(range(10))  # at most one segment per frame
    assert fit_segment_count(ids, 0).tolist() == [0] * 10


def test_segment_means_expand_and_majority_respect_padding() -> None:
    ids, counts = pad_segment_ids([torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1, 2])], 4)
    assert ids.tolist() == [[0, 0, 1, -1], [0, 1, 1, 2]] and counts.tolist() == [2, 3]
    x = torch.arange(8, dtype=torch.float32).view(2, 4, 1)
    means = segment_means(x, ids, counts)
    assert means[..., 0].tolist() == [[0.5, 2.0, 0.0], [4.0, 5.5, 7.0]]
    assert expand_segments(means, ids)[..., 0].tolist() == [[0.5, 0.5, 2.0, 0.0], [4.0, 5.5, 5.5, 7.0]]
    labels = torch.tensor([[3, 3, IGNORE, 0], [1, 2, 2, IGNORE]])
    assert segment_majority(labels, ids, counts, 4, IGNORE).tolist() == [[3, IGNORE, IGNORE], [1, 2, IGNORE]]
    spans = segment_frame_spans(ids, counts)
    assert spans.tolist() == [[[0, 2], [2, 3], [0, 0]], [[0, 1], [1, 3], [3, 4]]]
    times = spans.float() * 0.02
    centres = torch.tensor([[0.01, 0.03, 0.05, 0.07]] * 2)
    assert frames_at_times(times, counts, centres).tolist() == [[0, 0, 1, 1], [0, 1, 1, 2]]


def test_boundaries_from_alignments_and_from_a_file(tmp_path: Path) -> None:
    class Sup:
        start, custom = 0.0, {"phone_alignment": [["a", 0.1, 0.3], ["b", 0.3, 0.5], ["c", 0.6, 2.0]]}

    class Cut:
        id, duration, start, recording_id, supervisions = "c1", 1.0, 0.0, "r1", [Sup()]

    assert alignment_boundaries(Cut()) == [0.1, 0.3, 0.5, 0.6]  # the end past the cut is dropped
    path = tmp_path / "b.jsonl"
    path.write_text('{"id": "c1", "boundaries": [0.4, 0.2]}\n')
    assert read_boundaries(path) == {"c1": [0.2, 0.4]}
    assert BoundarySource(path).for_cuts([Cut()]) == [[0.2, 0.4]]
    Cut.id = "c2"
    with pytest.raises(SpeechrepError, match="no entry"):
        BoundarySource(path).for_cut(Cut())
    path.write_text("not json\n")
    with pytest.raises(ConfigError, match="line 1"):
        read_boundaries(path)


# --- the compressed upstream -------------------------------------------------------------------------------


def _wavs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, 16000) * 0.1, torch.tensor([16000, 11000])


VARIANTS = [
    dict(downsample=2),
    dict(downsample=4, pooling="conv"),
    dict(downsample=3, segmentation="units", segment_units=8),
    dict(downsample=2, segmentation="alignment"),
]


@pytest.mark.parametrize("overrides", VARIANTS,
                         ids=lambda o: f"{o.get('segmentation', 'fixed')}-{o['downsample']}")
def test_compressed_melhubert_outputs_segments_with_times(overrides: dict) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_upstream("melhubert_tiny", **overrides).eval()
    if "segment_units" in overrides:
        model.unit_centroids.normal_()
    wavs, lens = _wavs()
    extra = {"boundaries": [[0.1, 0.3, 0.5], [0.2]]} if model.needs_boundaries else {}
    plain = load_upstream("melhubert_tiny").eval()
    base_frames = plain(wavs, lens).lengths
    out = model(wavs, lens, **extra)
    k = overrides["downsample"]
    assert out.lengths.tolist() == [-(-int(n) // k) for n in base_frames]  # ceil(T / k) segments
    assert out.frame_times is not None and out.frame_times.shape[:2] == out.hidden_states[0].shape[:2]
    for row, n in enumerate(out.lengths.tolist()):
        times = out.frame_times[row, :n]
        assert float(times[0, 0]) == 0.0 and bool((times[1:, 0] == times[:-1, 1]).all())  # they tile
        assert float(times[-1, 1]) == pytest.approx(int(base_frames[row]) * 0.02, abs=1e-5)
    # padding never changes the real frames
    alone = model(wavs[1:, :11000], lens[1:], **({"boundaries": [[0.2]]} if extra else {}))
    torch.testing.assert_close(alone.hidden_states[-1][0], out.hidden_states[-1][1, : int(out.lengths[1])],
                               atol=1e-5, rtol=1e-4)
    # frame tasks read them on the 20 ms grid: each grid frame gets the segment it lies in
    states, grid_lens = on_frame_grid(out, lens, model.frame_geometry)
    assert grid_lens.tolist() == base_frames.tolist()
    ids, counts = model.segments(model.input_features(wavs, lens)[0], base_frames, extra.get("boundaries"))
    torch.testing.assert_close(states[-1], expand_segments(out.hidden_states[-1], ids))


def test_alignment_segments_follow_the_boundaries_and_need_them() -> None:
    model = load_upstream("melhubert_tiny", downsample=5, segmentation="alignment").eval()
    wavs, lens = _wavs()
    feats, frames = model.input_features(wavs[:1], lens[:1])
    ids, counts = model.segments(feats, frames, [[0.2, 0.4, 0.6, 0.8]])  # 5 phones of 10 frames each
    assert counts.tolist() == [10] and int(frames[0]) == 49
    assert torch.bincount(ids[0]).tolist() == [5] * 9 + [4]  # each phone split in two, to reach ceil(49/5)
    with pytest.raises(ConfigError, match="boundaries"):
        model(wavs, lens)


def test_conv_pooling_needs_fixed_segments() -> None:
    with pytest.raises(ConfigError, match="conv"):
        load_upstream("melhubert_tiny", downsample=2, segmentation="units", segment_units=4, pooling="conv")
    with pytest.raises(ConfigError, match="downsample"):
        load_upstream("melhubert_tiny", downsample=0)


# --- pre-training ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target_rate", ["upsample", "subsample"])
@pytest.mark.parametrize("model", ["downsample=4", "downsample=3,segmentation=alignment"])
def test_compressed_melhubert_learns(corpus: Path, labels: Path, target_rate: str, model: str) -> None:
    torch.set_num_threads(1)
    overrides = [f"model.{item}" for item in model.split(",")]
    cfg = method_config("melhubert", "tiny", [f"labels={labels}", f"target_rate={target_rate}", *overrides])
    torch.manual_seed(0)
    upstream = load_upstream(cfg.upstream, **cfg.model)
    objective = MelHuBERTObjective(upstream, ClusterLabels(labels), cfg)
    batch = first_batch(corpus)
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        torch.manual_seed(0)  # the same masks every step: their labels can be memorised
        loss, scalars = objective(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert 0.05 < scalars["mask_share"] < 0.9


def test_units_pretraining_fits_the_codebook_and_exports(corpus: Path, labels: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = run_method("melhubert", corpus, tmp_path / "run", "tiny", [
        f"labels={labels}", "model.downsample=4", "model.segmentation=units", "model.segment_units=16",
        "target_rate=subsample", "train.max_steps=2", "train.eval_every=2", "data.max_duration=6",
    ])
    exported = load_upstream(out).eval()
    assert exported.compressed and exported.config.segment_units == 16
    assert float(exported.unit_centroids.abs().sum()) > 0  # the fitted codebook is in the export
    wavs, lens = _wavs()
    result = exported(wavs, lens)
    assert result.frame_times is not None and result.lengths.tolist() == [13, 9]


def test_bad_target_rate_is_one_line(labels: Path) -> None:
    with pytest.raises(ConfigError, match="target_rate"):
        method_config("melhubert", "tiny", [f"labels={labels}", "target_rate=half"])


# --- downstream ---------------------------------------------------------------------------------------------


def test_benchmark_reads_compressed_upstreams_per_task(tmp_path: Path) -> None:
    """Utterance tasks get the short sequence, frame tasks the 20 ms grid; alignment pooling reads cuts."""
    from downstream_corpus import make_corpus

    from speechrep.bench.leaderboard import write_summary
    from speechrep.data.batching import load_cuts
    from speechrep.downstream import runner
    from speechrep.downstream.features import FeatureSource
    from speechrep.upstream.loading import export_upstream

    torch.set_num_threads(1)
    corpus = make_corpus(tmp_path / "corpus", ("pr", "sid"))
    torch.manual_seed(0)
    fixed = load_upstream("melhubert_tiny", downsample=4).eval()
    export_upstream(fixed, tmp_path / "fixed", {"test": "sequence compression"})
    model = load_upstream("melhubert_tiny", downsample=4, segmentation="alignment").eval()
    export_upstream(model, tmp_path / "aligned", {"test": "sequence compression"})
    fast = ["train.max_steps=4", "train.eval_every=4"]
    bench = tmp_path / "bench"
    rows = runner.benchmark(runner.BenchmarkConfig(
        [f"fixed={tmp_path / 'fixed'}"], ["sid", "pf"], corpus, bench, preset="tiny", overrides=fast))
    rows += runner.benchmark(runner.BenchmarkConfig(
        [f"aligned={tmp_path / 'aligned'}"], ["pr"], corpus, bench, preset="tiny", overrides=fast),
        summarise=lambda rows: write_summary(rows, bench))
    pairs = {(r["upstream"], r["task"]) for r in rows}
    assert pairs == {("fixed", "sid"), ("fixed", "pf"), ("aligned", "pr")}
    caches = sorted(p.name.split("-", 1)[0] + p.name[-5:] for p in (bench / "features").iterdir())
    assert len(caches) == 3 and caches[0].endswith("-grid") and caches[1].endswith("-grid")  # frame tasks
    assert caches[2].startswith("fixed") and not caches[2].endswith("-grid")  # the segments, for SID
    from speechrep.bench.report import write_report
    page = write_report(bench).read_text()
    assert '<section id="sequence">' in page and "<td>alignment</td>" in page  # the last run's config
    section = page.split('<section id="sequence">')[1].split("</section>")[0]
    assert "<td>12.5</td>" in section and "metric against frame rate" in section

    cuts = load_cuts(corpus, "pr", "dev").subset(first=2)
    source = FeatureSource("seq4", model)
    batch = next(iter(source.batches(cuts, 100.0, shuffle=False, live=True)(0)))
    boundaries = source.sequence.boundaries.for_cuts(batch.cuts)
    out = model(batch.wavs, batch.wav_lens, boundaries=boundaries)
    short, short_lens = source.encoder(get_frozen(), layers=[2]).hidden_states(batch)
    assert short_lens.tolist() == out.lengths.tolist()
    for row, n in enumerate(short_lens.tolist()):
        torch.testing.assert_close(short[2][row, :n], out.hidden_states[2][row, :n])
    grid = source.frame_grid_view()
    states, lengths = grid.encoder(get_frozen(), layers=[2]).hidden_states(batch)
    expected, expected_lens = on_frame_grid(out, batch.wav_lens, model.frame_geometry)
    assert lengths.tolist() == expected_lens.tolist() and bool((lengths > 3 * short_lens).all())
    torch.testing.assert_close(states[2], expected[2])


def get_frozen():  # noqa: ANN201 - the frozen tuning strategy
    from speechrep.tuning import get_tuning

    return get_tuning("frozen")


def test_hear_embeddings_of_a_compressed_upstream_lie_on_its_frame_grid() -> None:
    from speechrep.hear import HearModel, get_timestamp_embeddings

    torch.set_num_threads(1)
    model = load_upstream("melhubert_tiny", downsample=4).eval()
    hear = HearModel(model, layer=-1, chunk_seconds=2.0, overlap_seconds=0.5)
    audio = torch.randn(2, 16000) * 0.1
    embeddings, times = get_timestamp_embeddings(audio, hear)
    frames = model.frame_geometry.num_frames(16000)
    assert embeddings.shape[:2] == times.shape == (2, frames)
    assert torch.equal(embeddings[:, 0], embeddings[:, 3])  # one segment of 4 frames
    assert not torch.equal(embeddings[:, 3], embeddings[:, 4])
    with pytest.raises(ConfigError, match="chunking"):
        hear(torch.randn(1, 3 * 16000))  # longer than a window: segments cannot be stitched


# --- the integrated small model: a compressed MelHuBERT student of a MelHuBERT teacher ----------------------


def test_compressed_melhubert_student_distils_a_melhubert_teacher(corpus: Path, tmp_path: Path) -> None:
    from speechrep.pretrain.distilhubert import DistilHuBERTObjective, init_student_from_teacher, load_teacher
    from speechrep.upstream.loading import export_upstream

    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = load_upstream("melhubert_tiny", num_layers=4)
    teacher.set_feature_stats(torch.full((40,), -3.0), torch.full((40,), 2.0))
    export_upstream(teacher, tmp_path / "teacher", {"test": "teacher"})
    overrides = [f"teacher={tmp_path / 'teacher'}", "teacher_model={}", "upstream=melhubert_tiny",
                 "model={num_layers: 2, downsample: 3, segmentation: alignment}"]
    cfg = method_config("distilhubert", "tiny", overrides)
    student = load_upstream(cfg.upstream, **cfg.model)
    copied = init_student_from_teacher(student, load_teacher(cfg))
    assert {"projection.weight", "feature_mean", "encoder.layers.1.ffn.fc1.weight"} <= set(copied)
    objective = DistilHuBERTObjective(student, load_teacher(cfg), cfg)
    batch = first_batch(corpus)
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, _ = objective(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses

    out = run_method("distilhubert", corpus, tmp_path / "run", "tiny",
                     [*overrides, "train.max_steps=2", "train.eval_every=2", "data.max_duration=6"])
    exported = load_upstream(out)
    assert exported.needs_boundaries and len(exported.hidden_sizes) == 3
    torch.testing.assert_close(exported.feature_mean, torch.full((40,), -3.0))  # the teacher's statistics


def test_a_melhubert_student_without_the_teachers_weights_gets_corpus_statistics(
    corpus: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    out = run_method("distilhubert", corpus, tmp_path / "run", "tiny", [
        "upstream=melhubert_tiny", "model={num_layers: 2, downsample: 2}", "teacher=melhubert_tiny",
        "teacher_model={num_layers: 4}", "init_from_teacher=false", "train.max_steps=2", "train.eval_every=2",
        "data.max_duration=6", "stats_seconds=30"])
    exported = load_upstream(out)
    assert float(exported.feature_mean.abs().max()) > 0 and float((exported.feature_std - 1).abs().max()) > 0


def test_profile_counts_fewer_macs_at_lower_frame_rates() -> None:
    from speechrep.compress.profile import count_macs

    torch.set_num_threads(1)
    wavs, lens = _wavs()
    macs = {}
    for name, overrides in {"none": {}, "fixed4": {"downsample": 4},
                            "aligned4": {"downsample": 4, "segmentation": "alignment"}}.items():
        torch.manual_seed(0)
        model = load_upstream("melhubert_tiny", **overrides).eval()
        by_kind, _, frames = count_macs(model, wavs[:1], lens[:1])  # alignment: a boundary every 100 ms
        macs[name] = (sum(v for kind, v in by_kind.items() if kind not in ("front end", "other")), frames)
    assert macs["fixed4"][1] == macs["aligned4"][1] == 13 and macs["none"][1] == 49
    assert macs["fixed4"][0] < 0.3 * macs["none"][0]  # the Transformer's cost follows the frame count
    assert macs["aligned4"][0] == pytest.approx(macs["fixed4"][0], rel=0.02)


def test_benchmark_reads_boundaries_from_a_file(tmp_path: Path) -> None:
    from downstream_corpus import make_corpus

    from speechrep.data.batching import load_cuts
    from speechrep.downstream import runner
    from speechrep.upstream.loading import export_upstream

    torch.set_num_threads(1)
    corpus = make_corpus(tmp_path / "corpus", ("sid",))  # no phone alignments
    with pytest.raises(ConfigError, match="--boundaries"):
        missing = str(tmp_path / "no")
        runner.BenchmarkConfig(["x"], ["sid"], corpus, tmp_path / "b", boundaries=missing).check()
    lines = [f'{{"id": "{cut.id}", "boundaries": [0.1, 0.2]}}' for split in ("train", "dev", "test")
             for cut in load_cuts(corpus, "sid", split)]
    (tmp_path / "boundaries.jsonl").write_text("\n".join(lines) + "\n")
    export_upstream(load_upstream("melhubert_tiny", downsample=2, segmentation="alignment"), tmp_path / "up",
                    {"test": "boundaries file"})
    rows = runner.benchmark(runner.BenchmarkConfig(
        [f"aligned={tmp_path / 'up'}"], ["sid"], corpus, tmp_path / "bench", preset="tiny",
        overrides=["train.max_steps=2", "train.eval_every=2"], boundaries=str(tmp_path / "boundaries.jsonl")))
    assert rows[0]["task"] == "sid" and "accuracy" in rows[0]["test"]


def test_unit_boundaries_of_a_dictionary_feed_boundary_pooling(
    corpus: Path, labels: Path, tmp_path: Path
) -> None:
    from speechrep.data.batching import load_cuts
    from speechrep.pretrain.kmeans import write_unit_boundaries

    torch.set_num_threads(1)
    manifest = corpus / "unlabeled" / "train.jsonl.gz"
    count = write_unit_boundaries(labels, [manifest, corpus / "unlabeled" / "dev.jsonl.gz"],
                                  tmp_path / "units.jsonl")
    table = read_boundaries(tmp_path / "units.jsonl")
    cuts = load_cuts(manifest)
    assert count == len(table) > len(cuts)
    label_runs = ClusterLabels(labels)
    for cut in list(cuts)[:3]:  # the dictionary's labels of the same cut change exactly there
        units = label_runs.for_cut(cut)
        changes = [i for i in range(1, len(units)) if units[i] != units[i - 1]]
        assert [round(t / 0.02) for t in table[cut.id]] == changes
    out = run_method("melhubert", corpus, tmp_path / "run", "tiny", [
        f"labels={labels}", "model.downsample=3", "model.segmentation=alignment",
        f"boundaries={tmp_path / 'units.jsonl'}", "train.max_steps=2", "train.eval_every=2",
        "data.max_duration=6"])
    assert load_upstream(out).needs_boundaries
