"""Train a vocoder on a corpus and load a trained one: the recipe of `speechrep vocoder train|synthesize`.

    cfg = vocoder_config(preset="small", overrides=["features=RUN/upstream:2"])
    train_vocoder(cfg, corpus_dir, run_dir)     # resumable: the same call continues a killed run
    vocoder, features = load_vocoder(run_dir)   # best on dev; vocoder.synthesize(features.features(wav))

The run directory is an output folder of its own (lock, settings record, `--overwrite`) and a run directory
of the shared loop (config.yaml, checkpoints/{last,best}.pt, metrics.jsonl, results.json), plus
`vocoder.json`: what `load_vocoder` needs to rebuild the model (config, feature settings, input size).
Training examples are random crops (seeded by epoch) of the train split's utterances, their features
computed once per run.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from speechrep.apps.features import FrameFeatures, parse_feature_flag
from speechrep.apps.knnvc import prematch
from speechrep.apps.vocoder import Vocoder, VocoderConfig, vocoder_loss
from speechrep.audio import load_audio, save_audio
from speechrep.audio import synthesis as spectral
from speechrep.config import CONFIG_ROOT, config_to_dict, load_config
from speechrep.data.batching import load_cuts
from speechrep.errors import CheckpointError, ConfigError, SpeechrepError
from speechrep.storage import OutputFolder, atomic_write_json, disk_errors, ensure_output_dir
from speechrep.train import load_checkpoint, prepare_run_dir, seed_everything, train, write_results

log = logging.getLogger(__name__)
CONFIG_DIR = CONFIG_ROOT / "apps"
META_NAME = "vocoder.json"


def vocoder_config(preset: str | None = None, overrides: Sequence[str] = ()) -> VocoderConfig:
    """configs/apps/vocoder.yaml ← configs/apps/<preset>/vocoder.yaml ← `key=value` overrides."""
    paths = [CONFIG_DIR / "vocoder.yaml"]
    if preset is not None:
        paths.append(CONFIG_DIR / preset / "vocoder.yaml")
        if not paths[-1].is_file():
            known = sorted(p.parent.name for p in CONFIG_DIR.glob("*/vocoder.yaml"))
            raise ConfigError(f"vocoder: no preset {preset!r} (presets: {', '.join(known)})")
    return load_config(VocoderConfig, paths, overrides)


def _utterances(corpus: Path, subset: str, split: str, limit: int | None,
                extractor: FrameFeatures) -> list[tuple[str, str, Tensor, Tensor]]:
    """(id, speaker, features, wave) of a split's first `limit` cuts."""
    cuts = list(load_cuts(corpus, subset, split))[:limit]
    if not cuts:
        raise SpeechrepError(f"{corpus / subset / split}: no utterances to train the vocoder on")
    out = []
    for cut in cuts:
        wav = torch.from_numpy(cut.load_audio()[0]).float()
        speaker = cut.supervisions[0].speaker if cut.supervisions and cut.supervisions[0].speaker else cut.id
        out.append((cut.id, speaker, extractor.features(wav), wav))
    return out


def _crop_batches(utts: list[tuple[str, str, Tensor, Tensor]], cfg: VocoderConfig, hop: int):
    """epoch → batches of (features (B, F, H), waves (B, (F − 1)·hop)), crops drawn from seed + epoch."""
    frames = max(2, round(cfg.segment_seconds * spectral.SAMPLE_RATE / hop))

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator().manual_seed(cfg.train.seed + epoch)
        order = torch.randperm(len(utts), generator=gen).tolist()
        for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
            feats, waves = [], []
            for j in order[i:i + cfg.batch_size]:
                _, _, f, w = utts[j]
                start = int(torch.randint(0, max(1, len(f) - frames + 1), (1,), generator=gen))
                crop = f[start:start + frames]
                crop = torch.cat([crop, crop.new_zeros(frames - len(crop), crop.shape[1])])
                wave = w[start * hop:start * hop + (frames - 1) * hop]
                waves.append(torch.cat([wave, wave.new_zeros((frames - 1) * hop - len(wave))]))
                feats.append(crop)
            yield torch.stack(feats), torch.stack(waves)

    return batches


@torch.inference_mode()
def _evaluate(model: Vocoder, dev: list[tuple[str, str, Tensor, Tensor]]) -> dict[str, float]:
    """Mean log-mel L1 (and, for vocos, multi-resolution STFT loss) of whole dev utterances."""
    inner = getattr(model, "module", model)
    mel, stft = 0.0, 0.0
    for _, _, feats, wav in dev:
        if inner.kind == "mel_gl":
            predicted = inner(feats[None])[0]
            target = spectral.log_mel(wav)
            n = min(len(predicted), len(target))
            mel += float((predicted[:n] - target[:n]).abs().mean())
            continue
        estimate = inner.synthesize(feats)
        reference = wav[:len(estimate)]
        reference = torch.cat([reference, reference.new_zeros(len(estimate) - len(reference))])
        mel += float(spectral.mel_l1_loss(estimate[None], reference[None]))
        stft += float(spectral.multi_resolution_stft_loss(estimate[None], reference[None]))
    out = {"mel_l1": mel / len(dev)}
    if inner.kind == "vocos":
        out["stft"] = stft / len(dev)
    return out


def train_vocoder(cfg: VocoderConfig, corpus: Path, run_dir: Path, overwrite: bool = False,
                  settings: dict | None = None) -> dict[str, float]:
    """Train (or resume) a vocoder in `run_dir`; returns the dev metrics of the best checkpoint."""
    name, layer = parse_feature_flag(cfg.features)
    extractor = FrameFeatures(name, layer)
    record = {"corpus": str(Path(corpus).resolve()), "features": extractor.settings(),
              **(settings or {}), "config": config_to_dict(cfg)}
    with OutputFolder(run_dir, "speechrep vocoder train", record, overwrite), disk_errors(run_dir):
        started = time.time()
        prepare_run_dir(run_dir, cfg)
        atomic_write_json(run_dir / META_NAME, {"config": config_to_dict(cfg),
                                                "features": extractor.settings(), "in_size": extractor.size})
        seed_everything(cfg.train.seed)
        log.info("vocoder: computing %s features of %s/%s", cfg.features, corpus, cfg.subset)
        train_utts = _utterances(corpus, cfg.subset, "train", cfg.max_train_utterances, extractor)
        dev_utts = _utterances(corpus, cfg.subset, "dev", cfg.dev_utterances, extractor)
        if cfg.prematched:
            matched = prematch({u: f for u, _, f, _ in train_utts}, {u: s for u, s, _, _ in train_utts},
                               cfg.prematch_k)
            train_utts = [(u, s, matched[u], w) for u, s, _, w in train_utts]
        model = Vocoder(cfg, extractor.size, extractor.hop)
        frames = torch.cat([f for _, _, f, _ in train_utts])
        model.mean.copy_(frames.mean(0))
        model.std.copy_(frames.std(0).clamp(min=1e-5))
        state = train(model, _crop_batches(train_utts, cfg, extractor.hop),
                      lambda m, batch: vocoder_loss(getattr(m, "module", m), *batch, cfg), cfg.train, run_dir,
                      evaluate=lambda m: _evaluate(m, dev_utts))
        load_checkpoint(run_dir / "checkpoints" / "best.pt", model)
        model.eval()
        results = {**_evaluate(model, dev_utts), "best_step": state.best_step, "steps": state.step}
        done = run_dir / "results.json"
        previous = json.loads(done.read_text()) if done.is_file() else {}
        results["wall_time_s"] = round(previous.get("wall_time_s", 0.0) + time.time() - started, 1)
        write_results(run_dir, results)
        return results


def load_vocoder(run_dir: Path) -> tuple[Vocoder, FrameFeatures]:
    """The best-on-dev vocoder of a training run and the feature extractor it was trained on."""
    meta_path = Path(run_dir) / META_NAME
    if not meta_path.is_file():
        raise CheckpointError(f"{run_dir}: not a vocoder run (no {META_NAME}; train one with "
                              "`speechrep vocoder train`)")
    meta = json.loads(meta_path.read_text())
    cfg = _from_dict(meta["config"])
    extractor = FrameFeatures(meta["features"]["upstream"], meta["features"]["layer"])
    if extractor.fingerprint != meta["features"]["fingerprint"]:
        raise CheckpointError(f"{run_dir}: trained on other weights of {extractor.name} than it loads now")
    model = Vocoder(cfg, int(meta["in_size"]), extractor.hop)
    best = Path(run_dir) / "checkpoints" / "best.pt"
    if not best.is_file():
        raise CheckpointError(f"{best}: no trained vocoder yet (run `speechrep vocoder train` to the end)")
    load_checkpoint(best, model)
    return model.eval(), extractor


def _from_dict(data: dict) -> VocoderConfig:
    """The VocoderConfig recorded in vocoder.json (the training section left at its defaults)."""
    fields = {k: v for k, v in data.items() if k not in ("train",)}
    return VocoderConfig(**fields)


def synthesize_file(vocoder: Vocoder, extractor: FrameFeatures, source: Path) -> Tensor:
    """Copy-synthesis of one audio file: its features through the vocoder."""
    wav, _ = load_audio(source, spectral.SAMPLE_RATE)
    return vocoder.synthesize(extractor.features(wav))[:len(wav)]


GRIFFIN_LIM = "griffin-lim"  # `--vocoder griffin-lim`: the file's log-mel through Griffin-Lim, no model


def copy_synthesize(vocoder: str | Path, inputs: Sequence[Path], out: Path) -> list[Path]:
    """Copy-synthesis of audio files into `out/<stem>.wav` with a trained vocoder run or Griffin-Lim."""
    ensure_output_dir(out)
    model, extractor = (None, None) if str(vocoder) == GRIFFIN_LIM else load_vocoder(Path(vocoder))
    written = []
    for source in inputs:
        if model is None:
            wav, _ = load_audio(source, spectral.SAMPLE_RATE)
            wave = spectral.griffin_lim_from_log_mel(spectral.log_mel(wav), length=len(wav))
        else:
            wave = synthesize_file(model, extractor, source)
        written.append(save_audio(out / f"{Path(source).stem}.wav", wave.numpy(), spectral.SAMPLE_RATE))
    return written
