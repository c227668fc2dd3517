"""WavLM pre-training: utterance/noise mixing (short chunk, energy ratio, clean targets, p = 0), noise
manifests, gradients through the gated relative position bias, a tiny run that learns and exports a `wavlm`
upstream, and an exact resume after a kill."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording
from pretrain_corpus import first_batch, unlabeled_corpus
from torch import Tensor

from speechrep.data.batching import AudioBatch
from speechrep.pretrain import method_config, run_method
from speechrep.pretrain.kmeans import ClusterLabels, run_kmeans
from speechrep.pretrain.wavlm import (
    NoiseManifest,
    WavLMObjective,
    denoising_mix,
    noise_source,
    synthetic_noise,
)
from speechrep.train import read_checkpoint, read_metrics
from speechrep.upstream import load_upstream
from speechrep.upstream.wavlm import WavLM

SHORT = ["data.max_duration=6", "data.max_utterance=3.0", "train.log_every=1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def labels(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wavlm_labels") / "mfcc"
    run_kmeans("mfcc", corpus, 8, out, seed=0)
    return out


def tones(lens: list[int], width: int) -> tuple[Tensor, Tensor]:
    """Right-padded sines of different pitch and level, one row per length."""
    t = torch.arange(width) / 16000
    wavs = torch.zeros(len(lens), width)
    for i, n in enumerate(lens):
        wavs[i, :n] = torch.sin(2 * torch.pi * (200 + 150 * i) * t[:n]) * (0.2 + 0.3 * i)
    return wavs, torch.tensor(lens)


@pytest.mark.parametrize("noise_prob", [0.0, 0.5, 1.0])
def test_mixing_adds_one_chunk_shorter_than_half_within_the_energy_range(noise_prob: float) -> None:
    wavs, lens = tones([4000, 3000, 2000, 3500, 1000], 4000)
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        mixed = denoising_mix(wavs, lens, 1.0, noise_prob, synthetic_noise(), 0.5, (-5.0, 5.0), gen)
        assert mixed.shape == wavs.shape
        for i, n in enumerate(lens.tolist()):
            added = mixed[i] - wavs[i]
            changed = torch.nonzero(added.abs() > 0).flatten()
            assert len(changed) > 0 and int(changed.max()) < n  # padding untouched
            span = int(changed.max() - changed.min()) + 1
            assert span < 0.5 * n  # the secondary is shorter than half of the primary
            ratio = 10 * torch.log10(wavs[i, :n].square().mean() / added[changed.min() : changed.max() + 1]
                                     .square().mean())
            assert -5.05 <= float(ratio) <= 5.05


def test_speech_chunks_come_from_other_utterances_and_noise_from_the_noise_source() -> None:
    wavs, lens = tones([4000, 4000], 4000)
    silent = lambda count, width, generator=None: torch.zeros(count, width)  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(denoising_mix(wavs, lens, 1.0, 1.0, silent, generator=gen), wavs)  # all noise: silence
    mixed = denoising_mix(wavs, lens, 1.0, 0.0, silent, generator=gen)  # all speech: the other row's tone
    added = mixed[0] - wavs[0]
    piece = added[added != 0]
    spectrum = torch.fft.rfft(piece).abs()
    assert abs(float(spectrum.argmax()) * 16000 / len(piece) - 350) < 30  # row 1's 350 Hz, not row 0's 200 Hz
    single = denoising_mix(wavs[:1], lens[:1], 1.0, 0.0, synthetic_noise(), generator=gen)
    assert not torch.equal(single, wavs[:1])  # a batch of one is mixed with noise


def test_p_zero_leaves_the_input_unchanged_and_mixing_is_seeded_by_torch() -> None:
    wavs, lens = tones([4000, 3000, 2000], 4000)
    assert denoising_mix(wavs, lens, 0.0, 0.5, synthetic_noise()) is wavs
    torch.manual_seed(5)
    a = denoising_mix(wavs, lens, 0.5, 0.5, synthetic_noise())
    torch.manual_seed(5)
    assert torch.equal(a, denoising_mix(wavs, lens, 0.5, 0.5, synthetic_noise()))


def test_noise_manifest_gives_random_stretches_tiled_to_the_width(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    recordings = []
    for name, seconds in (("short", 0.05), ("long", 1.0)):
        path = tmp_path / f"{name}.flac"
        sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
        recordings.append(Recording.from_file(path, recording_id=name))
    manifest = tmp_path / "noise.jsonl.gz"
    CutSet.from_cuts(r.to_cut() for r in recordings).to_file(manifest)
    bank = noise_source(method_config("wavlm", "tiny", [f"noise={manifest}"]))
    assert isinstance(bank, NoiseManifest)
    rows = bank(6, 4000, torch.Generator().manual_seed(0))
    assert rows.shape == (6, 4000) and bool((rows.abs().amax(1) > 0).all())
    short = sf.read(tmp_path / "short.flac", dtype="float32")[0]
    tiled = bank._stretch(bank.cuts[0], 2000, 0.0)
    torch.testing.assert_close(tiled, torch.from_numpy(np.tile(short, 3)[:2000]), atol=1e-4, rtol=0)


def test_targets_stay_the_primary_ones_and_gradients_reach_the_gates(corpus: Path, labels: Path) -> None:
    torch.set_num_threads(1)
    cfg = method_config("wavlm", "tiny", [f"labels={labels}", "mix_prob=1.0"])
    torch.manual_seed(0)
    upstream = load_upstream(cfg.upstream, **cfg.model)
    objective = WavLMObjective(upstream, ClusterLabels(labels), cfg, noise_source(cfg))
    batch = first_batch(corpus, max_duration=6.0)
    seen: list[tuple[AudioBatch, Tensor]] = []
    predict = objective.masked.predict
    objective.masked.predict = lambda b, w: (seen.append((b, w)), predict(b, w))[1]
    loss, scalars = objective(batch)
    (clean_batch, mixed), = seen
    assert clean_batch is batch  # labels are looked up from the unmixed batch's cuts
    assert mixed.shape == batch.wavs.shape and not torch.equal(mixed, batch.wavs)
    assert scalars["mixed_share"] == 1.0
    loss.backward()
    gated = {n: p for n, p in upstream.named_parameters() if "gate" in n or "rel_pos" in n}
    assert len(gated) == 1 + 3 * cfg.model["num_layers"]  # shared bucket embedding; gate linear + constant
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in gated.values()), gated.keys()
    objective.eval()
    seen.clear()
    objective(batch)
    assert seen[0][1] is batch.wavs  # evaluation is clean


def test_tiny_run_learns_and_exports_a_wavlm_upstream(corpus: Path, labels: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = run_method(
        "wavlm", corpus, tmp_path / "run", "tiny",
        [f"labels={labels}", "mix_prob=0.5", "train.max_steps=40", "train.warmup_steps=5",
         "train.eval_every=40", *SHORT],
    )
    logs = read_metrics(tmp_path / "run", "train")
    losses = [m["loss"] for m in logs]
    assert np.mean(losses[-8:]) < np.mean(losses[:8]), losses
    assert 0 < np.mean([m["mixed_share"] for m in logs]) < 1
    exported = load_upstream(out)
    assert isinstance(exported, WavLM) and exported.family == "wavlm" and exported.stride == 320
    hidden = exported(torch.randn(1, 16000), torch.tensor([16000])).hidden_states
    assert len(hidden) == 5 and hidden[-1].shape == (1, 49, 64)


class _Killed(Exception):
    """Stands in for a killed job."""


def test_killed_run_resumes_to_the_same_weights(corpus: Path, labels: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    args = [f"labels={labels}", "mix_prob=1.0", "train.max_steps=6", "train.eval_every=3", *SHORT]
    full = run_method("wavlm", corpus, tmp_path / "full", "tiny", args)

    import speechrep.pretrain.common as common

    real_train = common.train

    def killed_after_step_5(*a, **kw):
        inner = kw["after_step"]

        def after_step(model, step):
            if inner is not None:
                inner(model, step)
            if step == 5:  # last checkpoint: step 3
                raise _Killed

        return real_train(*a, **{**kw, "after_step": after_step})

    monkeypatch.setattr(common, "train", killed_after_step_5)
    with pytest.raises(_Killed):
        run_method("wavlm", corpus, tmp_path / "split", "tiny", args)
    monkeypatch.setattr(common, "train", real_train)
    resumed = run_method("wavlm", corpus, tmp_path / "split", "tiny", args)

    a, b = load_upstream(full).state_dict(), load_upstream(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    heads = [read_checkpoint(tmp_path / r / "checkpoints" / "last.pt")["model"] for r in ("full", "split")]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    full_logs = read_metrics(tmp_path / "full", "train")
    split_logs = [m for m in read_metrics(tmp_path / "split", "train") if m["step"] > 3]
    assert [m["loss"] for m in full_logs[3:]] == [m["loss"] for m in split_logs[-3:]]
