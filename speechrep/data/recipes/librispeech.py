"""LibriSpeech (Panayotov et al. 2015) → `asr` (characters) and `pr` (phones), as in SUPERB ASR and PR.

Layout (`LibriSpeech/`): `<part>/<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac` with one
`<speaker>-<chapter>.trans.txt` per chapter; read by lhotse's own recipe. Phones come from the same eSpeak NG
G2P and phone set as the synthetic corpus, stored as `custom["phones"]`; `text` keeps the upper-case
transcript.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping

from lhotse import CutSet, SupervisionSet
from lhotse.recipes.librispeech import prepare_librispeech as lhotse_prepare_librispeech
from tqdm.auto import tqdm

from speechrep.data.recipes._common import Manifests, load_if_done, require, write_manifests

# our split -> LibriSpeech part (SUPERB's choice)
DEFAULT_PARTS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}


def espeak_phonemize(text: str) -> list[str]:
    """Phones of `text` from eSpeak NG (en-us), mapped onto the synthetic corpus's phone set."""
    from speechrep.data.synth.espeak import text_to_phonemes
    from speechrep.data.synth.phones import map_espeak_phonemes

    # eSpeak treats short all-caps words as acronyms and spells them out
    return map_espeak_phonemes(text_to_phonemes(text.lower()))


def prepare_librispeech(
    corpus_dir: Path,
    output_dir: Path | None = None,
    parts: Mapping[str, str] = DEFAULT_PARTS,
    phonemize: Callable[[str], list[str]] = espeak_phonemize,
) -> Manifests:
    """Read LibriSpeech into `asr/` and `pr/` {train,dev,test} cuts with `text` and `custom["phones"]`."""
    done = load_if_done(output_dir, {"asr": parts, "pr": parts})
    if done:
        return done
    corpus_dir = Path(corpus_dir)
    splits: dict[str, CutSet] = {}
    for split, part in parts.items():
        require(corpus_dir / part, f"LibriSpeech part {part!r}")
        read = lhotse_prepare_librispeech(corpus_dir, dataset_parts=[part], output_dir=None)[part]
        sups = [
            dataclasses.replace(s, language="en", custom={"phones": phonemize(s.text)})
            for s in tqdm(read["supervisions"], desc=f"phonemize {part}", leave=False)
        ]
        splits[split] = CutSet.from_manifests(
            recordings=read["recordings"], supervisions=SupervisionSet.from_segments(sups)
        )
    return write_manifests({"asr": splits, "pr": splits}, output_dir)
