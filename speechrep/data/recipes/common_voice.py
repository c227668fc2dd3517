"""Common Voice (Ardila et al. 2020) → the domain `ood_asr/<lang>`: SUPERB-SG's cross-lingual OOD-ASR (es,
zh-CN and ar of Common Voice 7.0; `speechrep.downstream.tasks.ood_asr`).

Layout (a release folder, e.g. `cv-corpus-7.0-2021-07-21/`): `<lang>/clips/*.mp3` and `<lang>/{train,dev,
test}.tsv`, tab-separated with a header; the recipe reads the `path` (clip file name) and `sentence` columns,
and `client_id` as the speaker when there is one. `--corpus-dir` is the release folder with `--lang`, or the
`<lang>` folder itself. MP3 is decoded by soundfile (libsndfile >= 1.1) and resampled to 16 kHz on load; a
missing or unreadable clip is left out and listed in OUT/skipped_common_voice.txt.

Transcripts are normalised the way SUPERB-SG's preprocessing does (reimplemented here): Unicode NFKC,
punctuation and symbols (Unicode categories P* and S*) become spaces except the apostrophe (`’` → `'`),
invisible format characters go, spaces collapse; Chinese and Japanese lose their spaces (character-level
transcripts); in Chinese, Japanese, Arabic and Russian a sentence with a Latin letter is dropped, and so is
a sentence left empty. Transcripts are lower-cased (SUPERB-SG upper-cases; speechrep's ASR lower-cases every
transcript). Unlike SUPERB-SG, which kept only the Spanish rows whose accent is `mexicano` (a column of the
7.0 release), every row is kept.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from pathlib import Path

from lhotse import CutSet

from speechrep.data.recipes._common import (
    SPLITS,
    CorpusLayoutError,
    Manifests,
    SkipReport,
    at_sample_rate,
    load_if_done,
    read_tsv,
    recording,
    require,
    whole_cut,
    write_manifests,
)

SUPERB_SG_LANGUAGES = ("es", "zh-CN", "ar")
NO_SPACES = ("zh-CN", "zh-TW", "zh-HK", "ja")  # written without spaces between words
NON_LATIN = (*NO_SPACES, "ar", "ru")  # a Latin letter in a sentence of these marks a code switch: dropped
_LATIN = re.compile(r"[A-Za-z]")


def _character(ch: str) -> str:
    """Punctuation, symbols and spacing → a space (the apostrophe stays); invisible format characters go."""
    kind = unicodedata.category(ch)[0]
    if ch == "'" or kind not in "PSZC":
        return ch
    return " " if ch.isspace() or kind != "C" else ""


def normalize_sentence(sentence: str, lang: str) -> str:
    """The transcript of a Common Voice sentence (see the module docstring); empty when it is dropped."""
    text = "".join(_character(ch) for ch in unicodedata.normalize("NFKC", sentence).replace("’", "'"))
    text = " ".join(text.split()).lower()
    if lang in NO_SPACES:
        text = text.replace(" ", "")
    if lang in NON_LATIN and _LATIN.search(text):
        return ""
    return text


def language_folder(corpus_dir: Path, lang: str | None) -> tuple[Path, str]:
    """(the `<lang>` folder, lang): `corpus_dir/<lang>` with a language, else `corpus_dir` named after it."""
    if lang is None:
        if not (corpus_dir / "clips").is_dir():
            raise CorpusLayoutError(f"{corpus_dir}: no clips/ folder; give the language (--lang es) of a "
                                    "Common Voice release folder, or the language folder itself")
        return corpus_dir, corpus_dir.name
    if "/" in lang or lang in ("", ".", ".."):
        raise CorpusLayoutError(f"--lang {lang!r}: not a Common Voice language code (e.g. es, zh-CN, ar)")
    return require(corpus_dir / lang, f"Common Voice language folder {lang!r}"), lang


def prepare_common_voice(corpus_dir: Path, output_dir: Path | None = None,
                         lang: str | None = None) -> Manifests:
    """Read one Common Voice language into `ood_asr/<lang>/` {train,dev,test} cuts with normalised `text`."""
    folder, lang = language_folder(Path(corpus_dir), lang)
    subset = f"ood_asr/{lang}"
    done = load_if_done(output_dir, {subset: SPLITS})
    if done:
        return done
    clips = require(folder / "clips", "clips folder")
    skipped = SkipReport()
    splits: dict[str, CutSet] = {}
    for split in SPLITS:
        cuts = []
        for _, row in read_tsv(folder / f"{split}.tsv", ("path", "sentence"), "Common Voice split list"):
            text = normalize_sentence(row["sentence"], lang)
            if not text:
                continue
            name = row["path"]
            rec = skipped.attempt(lambda: recording(clips / name, Path(name).stem, "Common Voice clip"))
            if rec is None:
                continue
            cut = whole_cut(at_sample_rate(rec), text=text, speaker=row.get("client_id") or None)
            cuts.append(dataclasses.replace(cut, supervisions=[dataclasses.replace(cut.supervisions[0],
                                                                                   language=lang)]))
        splits[split] = CutSet.from_cuts(cuts)
    skipped.report(output_dir, "common_voice")
    return write_manifests({subset: splits}, output_dir)
