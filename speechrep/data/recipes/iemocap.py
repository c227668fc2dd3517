"""IEMOCAP (Busso et al. 2008) → the `er` subset: four emotions, one fold per session, as in SUPERB ER.

Layout (`IEMOCAP_full_release/`): `Session{1..5}/sentences/wav/<dialog>/<utterance>.wav` and the labels in
`Session{n}/dialog/EmoEvaluation/<dialog>.txt`, one line per utterance:
`[start - end]<TAB>id<TAB>emo<TAB>[v, a, d]`.
Kept: neu, hap, exc (merged into hap), ang, sad, named like the synthetic `er` subset (neutral, happy, angry,
sad); every other label is dropped. Each cut carries `custom["emotion"]` and `custom["fold"]` (its session,
1-5), so any fold can be re-split later; the written
split tests on `test_session`, and keeps every fifth utterance of the other sessions for dev.
"""

from __future__ import annotations

import re
from pathlib import Path

from lhotse import CutSet, MonoCut

from speechrep.data.recipes._common import (
    Manifests,
    SkipReport,
    load_if_done,
    recording,
    require,
    whole_cut,
    write_manifests,
)
from speechrep.errors import ConfigError

SESSIONS = (1, 2, 3, 4, 5)
# IEMOCAP label -> the emotion names of the synthetic `er` subset; exc(ited) is merged into happy
EMOTIONS = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
DEV_EVERY = 5  # one training-session utterance in five goes to dev
_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(Ses\w+)\s+(\w+)\s+\[")


def read_emo_evaluation(path: Path) -> dict[str, str]:
    """Utterance id → categorical label (raw, e.g. `exc`, `xxx`) from one EmoEvaluation file."""
    labels = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if m:
            labels[m.group(3)] = m.group(4)
    return labels


def _session_cuts(root: Path, session: int, skipped: SkipReport) -> list[MonoCut]:
    """The cuts of one session whose label is one of the four classes."""
    sess_dir = require(root / f"Session{session}", "session folder")
    eval_dir = require(sess_dir / "dialog" / "EmoEvaluation", "EmoEvaluation folder")
    wav_dir = require(sess_dir / "sentences" / "wav", "sentences/wav folder")
    cuts = []
    for eval_file in sorted(eval_dir.glob("*.txt")):
        for utt, raw in sorted(read_emo_evaluation(eval_file).items()):
            emotion = EMOTIONS.get(raw)
            if emotion is None:
                continue
            wav = wav_dir / eval_file.stem / f"{utt}.wav"
            what = f"audio labelled in {eval_file.name}"
            rec = skipped.attempt(lambda w=wav, u=utt, what=what: recording(w, u, what))
            if rec is None:
                continue
            # the speaker is the session plus the gender letter of the utterance's last field (F000 / M012)
            speaker = f"Ses{session:02d}{utt.rsplit('_', 1)[-1][0]}"
            cuts.append(whole_cut(rec, speaker=speaker, custom={"emotion": emotion, "fold": session}))
    return cuts


def prepare_iemocap(corpus_dir: Path, output_dir: Path | None = None, test_session: int = 1) -> Manifests:
    """Read IEMOCAP into `er/{train,dev,test}` cuts with `custom["emotion"]` and `custom["fold"]`."""
    if test_session not in SESSIONS:
        raise ConfigError(f"test_session must be one of {SESSIONS}, got {test_session}")
    done = load_if_done(output_dir, {"er": ("train", "dev", "test")})
    if done:
        return done
    root = Path(corpus_dir)
    skipped = SkipReport()
    by_session = {session: _session_cuts(root, session, skipped) for session in SESSIONS}
    skipped.report(output_dir, "iemocap")
    rest = [cut for session, cuts in by_session.items() if session != test_session for cut in cuts]
    splits = {
        "train": [c for i, c in enumerate(rest) if i % DEV_EVERY != DEV_EVERY - 1],
        "dev": rest[DEV_EVERY - 1 :: DEV_EVERY],
        "test": by_session[test_session],
    }
    return write_manifests({"er": {s: CutSet.from_cuts(c) for s, c in splits.items()}}, output_dir)
