"""Speaker-verification trial lists (`1|0 enrol_cut test_cut` per line) for a split of cuts."""

from __future__ import annotations

import numpy as np
from lhotse import MonoCut


def make_trials(
    rng: np.random.Generator, cuts: list[MonoCut], max_nontarget_ratio: int = 10
) -> list[tuple[int, str, str]]:
    """Verification trials of one split: every same-speaker pair, and the different-speaker pairs (all of them,
    or a uniform sample of `max_nontarget_ratio` per target pair when there are more). Every pair counts once,
    so a split of 10 speakers x 10 cuts gives 450 target and 4500 non-target trials: enough for an EER that
    moves in steps of a fifth of a point rather than whole points."""
    ids = [cut.id for cut in cuts]
    speakers = [cut.supervisions[0].speaker for cut in cuts]
    pairs = [(i, j) for i in range(len(ids)) for j in range(i + 1, len(ids))]
    target = [(i, j) for i, j in pairs if speakers[i] == speakers[j]]
    nontarget = [(i, j) for i, j in pairs if speakers[i] != speakers[j]]
    if len(nontarget) > max_nontarget_ratio * len(target):
        keep = rng.choice(len(nontarget), size=max_nontarget_ratio * len(target), replace=False)
        nontarget = [nontarget[k] for k in sorted(keep)]
    trials = [(1, i, j) for i, j in target] + [(0, i, j) for i, j in nontarget]
    return [(label, ids[i], ids[j]) for label, i, j in sorted(trials, key=lambda t: (t[1], t[2]))]
