"""What tells the classes of the prosodic subsets apart, measured on their rendered audio with the project's
pitch tracker (`speechrep.audio.pitch_track`, 10 ms frames) and the word/phone alignments of the manifests.

F0 is in semitones (12·log2 of F0 / 100 Hz, voiced frames only), energy in dB (the tracker's 25 ms log-RMS).

- `sentence_type`: per class, the mean final F0 slope (semitones/s over the last 200 ms of voiced frames in
  the last word), the final F0 against the utterance median, the F0 range (95th − 5th percentile) and median.
- `emphasis`: each emphasised word against the same word of the same sentence and speaker when another word
  is emphasised (the minimal set): its duration, F0 excursion (max − min within the word), median F0 against
  the utterance median, and peak energy against the utterance's loudest frame.
- `irony`: per class, the speech duration (first word start to last word end), the F0 range and median, the
  duration of the adjective (the compliment's second-to-last word) and of its longest vowel.

The subset cards record these (`card.json` → `acoustics`), and the tests check their direction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np
from lhotse import MonoCut

from speechrep.audio import pitch_track

HOP = 160  # samples: 10 ms frames at 16 kHz
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})
_FINAL_WINDOW_S = 0.2


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


def _label(cut: MonoCut, name: str):  # noqa: ANN202 - a str or int class
    return cut.supervisions[0].custom[name]


def _means(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    rows = list(rows)
    return {key: round(float(np.nanmean([r[key] for r in rows])), 3) for key in rows[0]} if rows else {}


def sentence_type_measures(track: _Track) -> dict[str, float]:
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


def word_measures(track: _Track, start: float, end: float) -> dict[str, float]:
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


def irony_measures(track: _Track, phones: list[tuple[str, float, float]]) -> dict[str, float]:
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


def _aligned(cuts: Iterable[MonoCut], last: int | None = None) -> Iterable[tuple[MonoCut, _Track]]:
    """Cuts with their tracks whose word alignment ends with the `last` words of the transcript (None: is
    the transcript, one entry per word; eSpeak merges some function words into one entry, e.g. "was a")."""
    for cut in cuts:
        track = _Track(cut)
        words, labels = cut.supervisions[0].text.split(), [w for w, _, _ in track.words]
        if (labels == words if last is None else labels[-last:] == words[-last:]) and track.semitones.size:
            yield cut, track


def sentence_type_acoustics(cuts: Iterable[MonoCut]) -> dict:
    """Per sentence type, the means of `sentence_type_measures`."""
    rows = defaultdict(list)
    for cut, track in _aligned(cuts, last=1):
        rows[_label(cut, "sentence_type")].append(sentence_type_measures(track))
    return {label: {"utterances": len(r), **_means(r)} for label, r in sorted(rows.items())}


def irony_acoustics(cuts: Iterable[MonoCut]) -> dict:
    """Per class (sincere, ironic), the means of `irony_measures`."""
    rows = defaultdict(list)
    for cut, track in _aligned(cuts, last=2):
        phones = [tuple(p) for p in cut.supervisions[0].custom["phone_alignment"]]
        rows[_label(cut, "irony")].append(irony_measures(track, phones))
    return {label: {"utterances": len(r), **_means(r)} for label, r in sorted(rows.items())}


def emphasis_acoustics(cuts: Iterable[MonoCut]) -> dict:
    """Emphasised word minus the same word in the sentence's other renderings (same speaker), in the mean and
    per emphasised position."""
    sets: dict[tuple[str, str], dict[int, list[dict[str, float]]]] = defaultdict(dict)
    for cut, track in _aligned(cuts):
        words = [word_measures(track, start, end) for _, start, end in track.words]
        sets[(cut.supervisions[0].text, cut.supervisions[0].speaker)][_label(cut, "emphasis")] = words
    differences = defaultdict(list)
    for renderings in sets.values():
        for position, words in renderings.items():
            others = [r[position - 1] for p, r in renderings.items() if p != position]
            if others:
                emphasised = words[position - 1]
                differences[position].append(
                    {k: emphasised[k] - float(np.nanmean([o[k] for o in others])) for k in emphasised}
                )
    every = [d for rows in differences.values() for d in rows]
    return {"emphasised_minus_unemphasised": {"words": len(every), **_means(every)},
            **{f"position_{p}": {"words": len(r), **_means(r)} for p, r in sorted(differences.items())}}


ACOUSTICS: dict[str, Callable[[Iterable[MonoCut]], dict]] = {
    "sentence_type": sentence_type_acoustics,
    "emphasis": emphasis_acoustics,
    "irony": irony_acoustics,
}
