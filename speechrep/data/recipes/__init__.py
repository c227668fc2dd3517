"""Recipes that read the real corpora, in their published layouts, into the manifests of the synthetic corpus.

Every recipe writes OUT/<subset>/{train,dev,test}.jsonl.gz (lhotse CutSets) with the labels the task needs in
each supervision (`text`, `speaker`, `custom[...]`), and returns them as {subset: {split: CutSet}}.

    from speechrep.data.recipes import prepare_corpus
    manifests = prepare_corpus("speech_commands", "/data/speech_commands_v0.01", "manifests/")
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from speechrep.data.recipes._common import CorpusLayoutError, Manifests
from speechrep.data.recipes.common_voice import prepare_common_voice
from speechrep.data.recipes.covost2 import prepare_covost2
from speechrep.data.recipes.fluent_speech_commands import prepare_fluent_speech_commands
from speechrep.data.recipes.iemocap import prepare_iemocap
from speechrep.data.recipes.libri2mix import prepare_libri2mix
from speechrep.data.recipes.librispeech import prepare_librispeech
from speechrep.data.recipes.quesst14 import prepare_quesst14
from speechrep.data.recipes.sbcsae import prepare_sbcsae
from speechrep.data.recipes.snips import prepare_snips
from speechrep.data.recipes.speech_commands import prepare_speech_commands
from speechrep.data.recipes.vcc2020 import prepare_vcc2020
from speechrep.data.recipes.voicebank_demand import prepare_voicebank_demand
from speechrep.data.recipes.voxceleb1 import prepare_voxceleb1
from speechrep.errors import ConfigError

# corpus name -> prepare_x(corpus_dir, output_dir) -> {subset: {split: CutSet}}
RECIPES: dict[str, Callable[[Path, Path | None], Manifests]] = {
    "librispeech": prepare_librispeech,
    "speech_commands": prepare_speech_commands,
    "voxceleb1": prepare_voxceleb1,
    "iemocap": prepare_iemocap,
    "fluent_speech_commands": prepare_fluent_speech_commands,
    "libri2mix": prepare_libri2mix,
    "voicebank_demand": prepare_voicebank_demand,
    "quesst14": prepare_quesst14,
    "snips": prepare_snips,
    "vcc2020": prepare_vcc2020,
    "common_voice": prepare_common_voice,  # also takes `lang`
    "sbcsae": prepare_sbcsae,
    "covost2": prepare_covost2,  # En→De, into the subset `st`
}
LANGUAGE_RECIPES = ("common_voice",)  # the recipes of multilingual corpora: one language per run


def prepare_corpus(name: str, corpus_dir: str | Path, output_dir: str | Path | None,
                   lang: str | None = None) -> Manifests:
    """Run the recipe of corpus `name` on `corpus_dir`, writing the manifests under `output_dir`; `lang` picks
    the language of a multilingual corpus (`LANGUAGE_RECIPES`)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown corpus {name!r}; known: {', '.join(sorted(RECIPES))}")
    if lang is not None and name not in LANGUAGE_RECIPES:
        raise ConfigError(f"--lang {lang}: corpus {name!r} has one language (only "
                          f"{', '.join(LANGUAGE_RECIPES)} take --lang)")
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise CorpusLayoutError(f"{corpus_dir}: corpus folder does not exist")
    output = Path(output_dir) if output_dir is not None else None
    if name in LANGUAGE_RECIPES:
        return RECIPES[name](corpus_dir, output, lang=lang)
    return RECIPES[name](corpus_dir, output)


__all__ = ["LANGUAGE_RECIPES", "RECIPES", "CorpusLayoutError", "Manifests", "prepare_corpus"]
