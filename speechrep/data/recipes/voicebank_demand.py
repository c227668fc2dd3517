"""VoiceBank-DEMAND (Valentini-Botinhao et al. 2016) → the `se` subset: noisy speech with its clean reference.

Layout (Edinburgh DataShare release, 48 kHz): `noisy_trainset_28spk_wav/`, `clean_trainset_28spk_wav/`,
`noisy_testset_wav/`, `clean_testset_wav/` holding same-named files (`p226_001.wav`), and optionally the
transcripts in `trainset_28spk_txt/` and `testset_txt/` and the noise logs `logfiles/log_trainset_28spk.txt`,
`logfiles/log_testset.txt` (noise type and SNR per file, kept as `custom["noise"]`, `custom["snr"]`).
Recordings not at 16 kHz are resampled on load. Each cut is the noisy recording with the clean one as the
extra Recording field `clean` (`cut.load_clean()`).
Speakers p226 and p287 of the training set are held out as dev (the usual VoiceBank-DEMAND validation split).
"""

from __future__ import annotations

from pathlib import Path

from lhotse import CutSet, MonoCut

from speechrep.data.recipes._common import (
    CorpusLayoutError,
    Manifests,
    SkipReport,
    at_sample_rate,
    load_if_done,
    recording,
    require,
    whole_cut,
    write_manifests,
)
from speechrep.errors import AudioError

DEV_SPEAKERS = ("p226", "p287")
FOLDERS = {  # noisy, clean, transcripts, noise log
    "train": (
        "noisy_trainset_28spk_wav",
        "clean_trainset_28spk_wav",
        "trainset_28spk_txt",
        "log_trainset_28spk.txt",
    ),
    "test": ("noisy_testset_wav", "clean_testset_wav", "testset_txt", "log_testset.txt"),
}


def read_noise_log(path: Path) -> dict[str, dict]:
    """Stem → {"noise": type, "snr": dB} from `logfiles/log_*.txt` (`<stem> <noise type> <snr>` lines)."""
    if not path.is_file():
        return {}
    log = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            stem, noise, snr = fields
            log[stem] = {"noise": noise, "snr": float(snr)}
        except ValueError:
            raise CorpusLayoutError(
                f"{path}:{i}: expected '<file> <noise type> <snr>', got {line!r}"
            ) from None
    return log


def _pair_cut(path: Path, clean_dir: Path, txt_dir: Path, noise: dict | None) -> MonoCut:
    """The cut of one noisy file with its clean twin attached; an AudioError when the pair is not usable."""
    noisy_rec = at_sample_rate(recording(path, path.stem))
    clean_rec = at_sample_rate(
        recording(clean_dir / path.name, f"{path.stem}_clean", "clean twin of a noisy file")
    )
    if abs(clean_rec.duration - noisy_rec.duration) > 1e-3:
        raise AudioError(
            f"{clean_dir / path.name}: {clean_rec.duration:.3f} s, its noisy twin {noisy_rec.duration:.3f} s"
        )
    text_file = txt_dir / f"{path.stem}.txt"
    text = text_file.read_text().strip() if text_file.is_file() else None
    cut = whole_cut(noisy_rec, text=text, speaker=path.stem.split("_")[0], custom=noise)
    cut.clean = clean_rec
    return cut


def _pair_cuts(
    corpus_dir: Path, noisy: str, clean: str, txt: str, log: str, skipped: SkipReport
) -> list[MonoCut]:
    """One cut per usable noisy/clean pair, with its transcript when the txt folder exists."""
    noisy_dir = require(corpus_dir / noisy, "noisy folder")
    clean_dir = require(corpus_dir / clean, "clean folder")
    paths = sorted(noisy_dir.glob("*.wav"))
    if not paths:
        raise CorpusLayoutError(f"{noisy_dir}: no .wav files")
    noise = read_noise_log(corpus_dir / "logfiles" / log)
    cuts = [
        skipped.attempt(lambda p=p: _pair_cut(p, clean_dir, corpus_dir / txt, noise.get(p.stem)))
        for p in paths
    ]
    return [cut for cut in cuts if cut is not None]


def prepare_voicebank_demand(corpus_dir: Path, output_dir: Path | None = None) -> Manifests:
    """Read VoiceBank-DEMAND into `se/{train,dev,test}` cuts of noisy audio with `cut.clean`."""
    done = load_if_done(output_dir, {"se": ("train", "dev", "test")})
    if done:
        return done
    corpus_dir = Path(corpus_dir)
    skipped = SkipReport()
    train = _pair_cuts(corpus_dir, *FOLDERS["train"], skipped)
    se = {
        "train": [c for c in train if c.supervisions[0].speaker not in DEV_SPEAKERS],
        "dev": [c for c in train if c.supervisions[0].speaker in DEV_SPEAKERS],
        "test": _pair_cuts(corpus_dir, *FOLDERS["test"], skipped),
    }
    skipped.report(output_dir, "voicebank_demand")
    return write_manifests({"se": {s: CutSet.from_cuts(c) for s, c in se.items()}}, output_dir)
