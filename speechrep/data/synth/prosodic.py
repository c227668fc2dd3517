"""The prosody-intensive subsets (issue 17; Lin et al., SLT 2022): the same words in every class, so only
how a sentence is spoken tells its class.

- `sentence_type`: a four-word sentence ("anna bought red apples") said as a statement (`.`), a question
  (`?`: eSpeak's question tune, a final rise) or an exclamation (`!`: eSpeak's exclamation tune, with the
  pitch raised 20 % and its range doubled); label `custom["sentence_type"]`.
- `emphasis`: the same kind of sentence with SSML `<emphasis>` on word 1, 2 or 3 (eSpeak lengthens the word,
  makes it louder and gives it a falling pitch accent); label `custom["emphasis"]`, the 1-based index of the
  emphasised word.
- `irony`: a compliment ("that was a great idea") said sincerely (plain) or with exaggerated irony (the
  sentence at 80 % rate and 200 % pitch range, the adjective emphasised and drawn out at 50 % rate); label
  `custom["irony"]`.

Each sentence is spoken once in every class of its subset by one speaker (a minimal set: same words, same
voice), so every transcript carries each label equally often and the text alone is at chance. The
supervision's `text` is the plain transcript (lowercase words, no punctuation), the same for every class.
Splits are speaker-disjoint like every other subset and also sentence-disjoint (no sentence of test occurs in
train), so a head cannot score by remembering how one sentence sounds in each class: it has to hear the
intonation, the emphasis or the exaggeration on new words and new voices.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from speechrep.data.synth.subsets import SPLITS, Item, Plan, _assign, _single_item, _speakers, _spec

Render = Callable[[list[str]], str]  # the words of a sentence -> the SSML body eSpeak speaks
Classes = dict[str, Render] | dict[int, Render]  # class label -> its rendering
Slots = tuple[tuple[str, ...], ...]  # a sentence template: one word (or phrase) from each slot

# Four-word sentences whose words are all content words, so any of them can carry the emphasis.
NAMES = ("anna", "david", "maria", "peter", "lucy", "martin", "emma", "oliver", "sarah", "daniel", "julia",
         "thomas")
VERBS = ("bought", "painted", "cleaned", "sold", "found", "washed", "borrowed", "ordered", "fixed", "carried",
         "wanted", "needed")
ADJECTIVES = ("red", "green", "old", "new", "small", "heavy", "cheap", "yellow", "wooden", "broken", "purple",
              "silver")
NOUNS = ("apples", "chairs", "bottles", "lamps", "boxes", "shoes", "bikes", "books", "tables", "candles",
         "blankets", "baskets")

# Compliments that can be meant or not: opener + positive adjective (the word irony draws out) + noun.
IRONY_OPENERS = ("that was a", "what a", "this is a", "it was a", "that is such a", "oh what a", "we had a",
                 "that is really a")
IRONY_ADJECTIVES = ("great", "lovely", "brilliant", "wonderful", "fantastic", "clever", "nice", "perfect",
                    "beautiful", "splendid", "charming", "terrific", "superb", "fabulous")
IRONY_NOUNS = ("idea", "plan", "day", "party", "surprise", "meeting", "result", "trip", "dinner", "job",
               "speech", "answer", "story", "present", "game", "movie", "concert", "holiday", "lesson",
               "weekend")


def _emphasise(index: int) -> Render:
    def render(words: list[str]) -> str:
        marked = list(words)
        marked[index - 1] = f"<emphasis>{marked[index - 1]}</emphasis>"
        return " ".join(marked) + "."

    return render


def _ironic(words: list[str]) -> str:
    *opener, adjective, noun = words
    return (f'<prosody rate="80%" range="200%">{" ".join(opener)} '
            f'<emphasis><prosody rate="50%">{adjective}</prosody></emphasis> {noun}.</prosody>')


SENTENCE_TYPES: dict[str, Render] = {
    "statement": lambda words: " ".join(words) + ".",
    "question": lambda words: " ".join(words) + "?",
    "exclamation": lambda words: f'<prosody pitch="+20%" range="200%">{" ".join(words)}!</prosody>',
}
EMPHASIS: dict[int, Render] = {index: _emphasise(index) for index in (1, 2, 3)}
IRONY: dict[str, Render] = {"sincere": lambda words: " ".join(words) + ".", "ironic": _ironic}


def _distinct_sentences(rng: np.random.Generator, slots: Slots, count: int) -> list[list[str]]:
    """`count` different sentences, one word (or phrase) from each slot, drawn without replacement."""
    sizes = tuple(len(s) for s in slots)
    if count > int(np.prod(sizes)):
        raise ValueError(f"{count} sentences asked of a template that makes only {int(np.prod(sizes))}")
    picks = np.unravel_index(rng.choice(int(np.prod(sizes)), size=count, replace=False), sizes)
    return [" ".join(slot[int(i)] for slot, i in zip(slots, choice)).split() for choice in zip(*picks)]


def plan_minimal_sets(
    name: str,
    classes: Classes,
    slots: Slots,
    rng: np.random.Generator,
    audio_dir: Path,
    speakers: tuple[int, int, int],
    counts: tuple[int, int, int],
) -> Plan:
    """Per split, `counts[split] / len(classes)` new sentences, each spoken in every class by one speaker
    (speakers round-robin); `custom[name]` holds the class, `text` the plain transcript."""
    if any(n % len(classes) for n in counts):
        raise ValueError(f"{name}: utterances per split {counts} must be multiples of {len(classes)} classes")
    spk = _speakers(rng, speakers, f"{name}_spk")
    groups = [n // len(classes) for n in counts]
    pool = iter(_distinct_sentences(rng, slots, sum(groups)))
    items: dict[str, list[Item]] = {}
    for split, count in zip(SPLITS, groups):
        items[split] = []
        for speaker in _assign(rng, spk[split], count):
            words = next(pool)
            for value, render in classes.items():
                cut_id = f"{name}_{split}_{len(items[split]):05d}"
                spec = _spec(rng, speaker, f"<speak>{render(words)}</speak>", ssml=True)
                items[split].append(
                    _single_item(audio_dir, cut_id, spec, {name: value}, transcript=" ".join(words))
                )
    return Plan(spk, items)


def _planner(name: str, classes: Classes, slots: Slots) -> Callable[..., Plan]:
    return lambda rng, d, s, c: plan_minimal_sets(name, classes, slots, rng, d, s, c)


_SENTENCE_SLOTS = (NAMES, VERBS, ADJECTIVES, NOUNS)
PROSODIC_PLANNERS: dict[str, Callable[..., Plan]] = {
    "sentence_type": _planner("sentence_type", SENTENCE_TYPES, _SENTENCE_SLOTS),
    "emphasis": _planner("emphasis", EMPHASIS, _SENTENCE_SLOTS),
    "irony": _planner("irony", IRONY, (IRONY_OPENERS, IRONY_ADJECTIVES, IRONY_NOUNS)),
}  # each subset's label is `custom[<subset name>]`
