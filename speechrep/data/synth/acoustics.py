"""What tells the classes of the prosodic subsets apart, measured on their rendered audio with the project's
pitch tracker (`speechrep.audio.pitch_track`, 10 ms frames) and the word/phone alignments of the manifests.

F0 is in semitones (12·log2 of F0 / 100 Hz, voiced frames only), energy in dB (the tracker's 25 ms log-RMS).
`utterance_measures(subset, cut)` gives one utterance's numbers:

- `sentence_type`: the final F0 slope (semitones/s over the last 200 ms of voiced frames in the last word),
  the final F0 against the utterance median, the F0 range (95th − 5th percentile) and median.
- `emphasis`: per word, its duration, F0 excursion (max − min within the word), median F0 against the
  utterance median, and peak energy against the utterance's loudest frame.
- `irony`: the speech duration (first word start to last word end), the F0 range and median, the duration of
  the adjective (the compliment's second-to-last word) and of its longest vowel.

`class_differences` summarises them per class (emphasis: each emphasised word minus the same word of the same
sentence and speaker where another word is emphasised, the minimal set), and `prosodic_baseline` fits a
logistic regression on them (train → test): how far the prosody alone goes. The subset cards record both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
from lhotse import MonoCut

from speechrep.audio import pitch_track

HOP = 160  # samples: 10 ms frames at 16 kHz
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})
_FINAL_WINDOW_S = 0.2

Measures = dict[str, float]


class _Track:
    """A cut's pitch track with its voiced frames in semitones and its words (label, start_s, end_s)."""

    def __init__(self, cut: MonoCut) -> None:
        track = pitch_track(cut.load_audio()[0], cut.sampling_rate, hop=HOP)
        self.times, self.energy_db, voiced = track.times, track.energy_db, track.voiced
        self.voiced_times = track.times[voiced]
        self.semitones = 12 * np.log2(track.f0_hz[voiced] / 100.0)
        self.median = float(np.median(self.semitones)) if self.semitones.size else np.nan
        self.words = [tuple(w) for w in cut.supervisions[0].custom["word_alignment"]]

    def voiced_in(self, start: float, end: float) -> np.ndarray:
        return self.semitones[(self.voiced_times >= start) & (self.voiced_times < end)]

    def f0_range(self) -> float:
        return float(np.percentile(self.semitones, 95) - np.percentile(self.semitones, 5))


def sentence_type_measures(track: _Track) -> Measures:
    """Final F0 slope and level, F0 range and median of one utterance."""
    _, start, end = track.words[-1]
    last = (track.voiced_times >= start) & (track.voiced_times < end)
    final = track.voiced_times[last].max() if last.any() else end
    tail = last & (track.voiced_times >= final - _FINAL_WINDOW_S)
    slope = np.polyfit(track.voiced_times[tail], track.semitones[tail], 1)[0] if tail.sum() >= 4 else np.nan
    return {
        "final_slope_st_per_s": float(slope),
        "final_f0_st": float(track.semitones[-3:].mean() - track.median),
        "f0_range_st": track.f0_range(),
        "median_f0_st": track.median,
    }


def word_measures(track: _Track, start: float, end: float) -> Measures:
    """Duration, F0 excursion, median F0 and peak energy of one word (the last two against the utterance)."""
    f0 = track.voiced_in(start, end)
    frames = (track.times >= start) & (track.times < end)
    peak = track.energy_db[frames].max() - track.energy_db.max() if frames.any() else np.nan
    return {
        "duration_s": end - start,
        "f0_excursion_st": float(f0.max() - f0.min()) if f0.size > 2 else np.nan,
        "median_f0_st": float(np.median(f0) - track.median) if f0.size else np.nan,
        "peak_energy_db": float(peak),
    }


def irony_measures(track: _Track, phones: list[tuple[str, float, float]]) -> Measures:
    """Speech duration, F0 range and median, and how long the adjective and its longest vowel last."""
    _, start, end = track.words[-2]
    vowels = [e - s for p, s, e in phones if p in VOWELS and s >= start - 1e-3 and e <= end + 1e-3]
    return {
        "speech_s": track.words[-1][2] - track.words[0][1],
        "f0_range_st": track.f0_range(),
        "median_f0_st": track.median,
        "adjective_s": end - start,
        "adjective_vowel_s": max(vowels) if vowels else np.nan,
    }


def utterance_measures(subset: str, cut: MonoCut) -> Measures | None:
    """The measures of one cut of `subset`, or None where its word alignment does not fit the transcript
    (eSpeak merges some function words into one entry, e.g. "was a": the words a measure reads must be
    their own entries) or no frame is voiced."""
    track = _Track(cut)
    words, labels = cut.supervisions[0].text.split(), [w for w, _, _ in track.words]
    last = {"sentence_type": 1, "irony": 2, "emphasis": len(words)}[subset]
    if not track.semitones.size or len(labels) < last or labels[-last:] != words[-last:]:
        return None
    if subset == "sentence_type":
        return sentence_type_measures(track)
    if subset == "irony":
        return irony_measures(track, [tuple(p) for p in cut.supervisions[0].custom["phone_alignment"]])
    if len(labels) != len(words):
        return None
    return {f"word{i}_{key}": value for i, (_, start, end) in enumerate(track.words, 1)
            for key, value in word_measures(track, start, end).items()}


def _means(rows: Iterable[Measures]) -> Measures:
    rows = list(rows)
    return {key: round(float(np.nanmean([r[key] for r in rows])), 3) for key in rows[0]} if rows else {}


def _emphasis_differences(measured: list[tuple[MonoCut, Measures]]) -> dict:
    sets: dict[tuple[str, str], dict[int, Measures]] = defaultdict(dict)
    for cut, measures in measured:
        sup = cut.supervisions[0]
        sets[(sup.text, sup.speaker)][sup.custom["emphasis"]] = measures
    differences = defaultdict(list)
    for renderings in sets.values():
        for position, measures in renderings.items():
            others = [m for p, m in renderings.items() if p != position]
            prefix = f"word{position}_"
            if others:
                differences[position].append({
                    key[len(prefix):]: value - float(np.nanmean([o[key] for o in others]))
                    for key, value in measures.items() if key.startswith(prefix)
                })
    every = [d for rows in differences.values() for d in rows]
    return {"emphasised_minus_unemphasised": {"words": len(every), **_means(every)},
            **{f"position_{p}": {"words": len(r), **_means(r)} for p, r in sorted(differences.items())}}


def class_differences(subset: str, measured: list[tuple[MonoCut, Measures | None]]) -> dict:
    """Per class, the mean measures (emphasis: emphasised minus unemphasised, overall and per position)."""
    measured = [(cut, m) for cut, m in measured if m is not None]
    if subset == "emphasis":
        return _emphasis_differences(measured)
    rows = defaultdict(list)
    for cut, measures in measured:
        rows[cut.supervisions[0].custom[subset]].append(measures)
    return {label: {"utterances": len(r), **_means(r)} for label, r in sorted(rows.items())}


def prosodic_baseline(subset: str, train: list[tuple[MonoCut, Measures | None]],
                      test: list[tuple[MonoCut, Measures | None]]) -> dict:
    """Logistic regression on the standardised measures (missing values 0) of train, accuracy on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def table(pairs: list[tuple[MonoCut, Measures | None]]) -> tuple[np.ndarray, list[str]]:
        kept = [(cut, m) for cut, m in pairs if m is not None]
        rows = np.array([list(m.values()) for _, m in kept], dtype=np.float64).reshape(len(kept), -1)
        x = np.nan_to_num(rows)
        return x, [str(cut.supervisions[0].custom[subset]) for cut, _ in kept]

    (x_train, y_train), (x_test, y_test) = table(train), table(test)
    if len(set(y_train)) < 2 or not y_test:
        return {}
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)
    return {
        "features": f"{x_train.shape[1]} prosodic measures",
        "classifier": "logistic regression",
        "test_accuracy": round(float(np.mean(model.predict(x_test) == np.array(y_test))), 4),
        "test_utterances": len(y_test),
        "test_utterances_skipped": len(test) - len(y_test),
    }
