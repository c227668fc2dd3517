"""Sentences for the speech-translation subset `st`: a small English grammar and a rule-based translator into
Zelan, an invented language, so that the mapping is learnable but not word for word.

English (spoken by eSpeak): `SUBJECT VERB OBJECT [PP] [ADVERB]`, or `SUBJECT SAYS that SUBJECT VERB OBJECT
[PP] [ADVERB]`. A noun phrase is `the|a|NUMBER [ADJECTIVE] NOUN` (numbers two to nine take plural nouns; `the`
takes either number); a PP is `PREPOSITION the|a [ADJECTIVE] NOUN`; verbs agree with their subject (`eats`,
`eat`). 60 nouns, 30 adjectives, 30 verbs, 4 verbs of saying, 15 adverbs, 8 prepositions and 8 numbers: about
260 English word types.

Zelan (`ZELAN`, language code `zl`): every English lemma has one Zelan lemma (`LEXICON`), every noun a gender
(m, f, n). The rules:
1. Articles agree with the noun: definite `lo` (m), `la` (f), `le` (n), `li` (plural); indefinite `un` (m),
   `una` (f), `une` (n). Numbers stand where the article stands.
2. Plural nouns take the suffix `-en` (`-n` after a vowel): `hund` → `hunden`, `kasa` → `kasan`.
3. Adjectives follow the noun and agree with it: suffix `-o` (m), `-a` (f), `-e` (n), `-i` (plural).
4. Verbs agree with the subject: `-t` (singular), `-n` (plural) on the stem.
5. Main clauses put the adverb right after the verb: `S V ADV O PP`.
6. Clauses after `that` (`ke`) are verb-final: `S ADV O PP V`.

So "the big dog quickly" is not a phrase of its own: "the big dog eats two red apples in the garden
quickly" becomes "lo hund grando mangat rapi dva apelen
rubi in la garda". `translate` works on the parsed
sentence (`Sentence`), which `english_sentence` draws and `english` renders.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ZELAN = "zl"  # the target language's code in the cuts (`custom.target_language`)

# English noun (singular, plural) -> (Zelan stem, gender)
NOUNS: dict[tuple[str, str], tuple[str, str]] = {
    ("dog", "dogs"): ("hund", "m"), ("cat", "cats"): ("kata", "f"), ("horse", "horses"): ("kaval", "m"),
    ("bird", "birds"): ("fogel", "m"), ("fish", "fish"): ("piska", "f"), ("cow", "cows"): ("vaka", "f"),
    ("man", "men"): ("viro", "m"), ("woman", "women"): ("dama", "f"), ("child", "children"): ("kindo", "n"),
    ("teacher", "teachers"): ("lerar", "m"), ("doctor", "doctors"): ("medika", "f"),
    ("farmer", "farmers"): ("bauro", "m"), ("girl", "girls"): ("pika", "f"), ("boy", "boys"): ("puer", "m"),
    ("king", "kings"): ("rego", "m"), ("queen", "queens"): ("regina", "f"),
    ("friend", "friends"): ("amik", "m"), ("baker", "bakers"): ("panar", "m"),
    ("sailor", "sailors"): ("marin", "m"), ("student", "students"): ("studa", "f"),
    ("apple", "apples"): ("apel", "m"), ("book", "books"): ("libro", "n"),
    ("letter", "letters"): ("brev", "m"), ("house", "houses"): ("kasa", "f"),
    ("car", "cars"): ("vagen", "m"), ("boat", "boats"): ("nava", "f"), ("table", "tables"): ("tavla", "f"),
    ("chair", "chairs"): ("sela", "f"), ("window", "windows"): ("fenstra", "n"),
    ("door", "doors"): ("porta", "f"), ("ball", "balls"): ("bola", "f"), ("cake", "cakes"): ("kuko", "n"),
    ("bread", "breads"): ("pano", "n"), ("cup", "cups"): ("tasa", "f"), ("key", "keys"): ("klav", "m"),
    ("flower", "flowers"): ("flor", "m"), ("tree", "trees"): ("arbo", "n"),
    ("stone", "stones"): ("lito", "n"), ("song", "songs"): ("kanto", "n"),
    ("picture", "pictures"): ("bilda", "f"), ("hat", "hats"): ("huto", "m"),
    ("shoe", "shoes"): ("sapa", "f"), ("coat", "coats"): ("mantel", "m"), ("lamp", "lamps"): ("lumo", "n"),
    ("box", "boxes"): ("kista", "f"), ("bag", "bags"): ("sako", "m"), ("clock", "clocks"): ("hora", "f"),
    ("bottle", "bottles"): ("botel", "m"), ("egg", "eggs"): ("ovo", "n"),
    ("river", "rivers"): ("flumo", "m"), ("garden", "gardens"): ("garda", "f"),
    ("kitchen", "kitchens"): ("kuzina", "f"), ("market", "markets"): ("merkat", "m"),
    ("school", "schools"): ("skola", "f"), ("village", "villages"): ("dorfo", "n"),
    ("forest", "forests"): ("silva", "f"), ("street", "streets"): ("strada", "f"),
    ("bridge", "bridges"): ("ponto", "m"), ("room", "rooms"): ("kamer", "m"),
    ("hill", "hills"): ("kolo", "m"), ("city", "cities"): ("urbe", "n"),
}
ADJECTIVES: dict[str, str] = {
    "big": "grand", "small": "pik", "old": "vet", "young": "jun", "red": "rub", "blue": "blau",
    "green": "verd", "black": "negr", "white": "blank", "yellow": "gel", "happy": "felik", "sad": "trist",
    "quiet": "kalm", "loud": "fort", "new": "nov", "warm": "kald", "cold": "frid", "heavy": "pez",
    "light": "lev", "clean": "pur", "dirty": "sordid", "long": "lung", "short": "kurt", "beautiful": "bel",
    "strange": "stran", "tired": "las", "clever": "sapi", "brave": "kuraj", "empty": "vak", "round": "rund",
}
# English verb (third person singular, plural) -> Zelan stem
VERBS: dict[tuple[str, str], str] = {
    ("sees", "see"): "vide", ("finds", "find"): "trova", ("takes", "take"): "prene",
    ("likes", "like"): "ama", ("buys", "buy"): "kompra", ("sells", "sell"): "venda",
    ("carries", "carry"): "vekta", ("opens", "open"): "apri", ("closes", "close"): "klude",
    ("paints", "paint"): "pinta", ("cleans", "clean"): "lava", ("eats", "eat"): "manga",
    ("brings", "bring"): "bringa", ("wants", "want"): "vola", ("needs", "need"): "bezo",
    ("holds", "hold"): "tena", ("watches", "watch"): "spekta", ("follows", "follow"): "sekva",
    ("helps", "help"): "helpa", ("visits", "visit"): "vizita", ("draws", "draw"): "skiza",
    ("moves", "move"): "mova", ("throws", "throw"): "jeta", ("keeps", "keep"): "konserva",
    ("hides", "hide"): "kaza", ("loses", "lose"): "perda", ("makes", "make"): "fara",
    ("breaks", "break"): "ruma", ("reads", "read"): "lega", ("hears", "hear"): "oda",
}
SAYING: dict[tuple[str, str], str] = {
    ("says", "say"): "dika", ("thinks", "think"): "pensa", ("knows", "know"): "scia",
    ("believes", "believe"): "kreda",
}
ADVERBS: dict[str, str] = {
    "quickly": "rapi", "slowly": "lento", "today": "oje", "again": "ankor", "later": "tardo", "now": "nun",
    "together": "insem", "carefully": "kura", "happily": "felu", "quietly": "kalme", "yesterday": "jeri",
    "tomorrow": "dema", "early": "fruo", "gladly": "gerne", "outside": "foro",
}
PREPOSITIONS: dict[str, str] = {
    "in": "in", "on": "sur", "under": "sub", "near": "pres", "behind": "post", "with": "kun", "from": "de",
    "beside": "apud",
}
NUMBERS: dict[str, str] = {
    "two": "dva", "three": "tri", "four": "kvar", "five": "pent", "six": "ses", "seven": "sep",
    "eight": "okt", "nine": "nin",
}
THAT = "ke"
DEFINITE = {"m": "lo", "f": "la", "n": "le", "pl": "li"}
INDEFINITE = {"m": "un", "f": "una", "n": "une"}
ADJECTIVE_ENDINGS = {"m": "o", "f": "a", "n": "e", "pl": "i"}
_NOUN_LIST = list(NOUNS)
_VERB_LIST = list(VERBS)


@dataclass(frozen=True)
class Phrase:
    """A noun phrase: determiner (`the`, `a` or a number word), optional adjective, noun, number."""

    determiner: str
    noun: tuple[str, str]  # a key of NOUNS
    plural: bool
    adjective: str | None = None


@dataclass(frozen=True)
class Clause:
    """Subject, verb (a key of VERBS), object, optional prepositional phrase and adverb."""

    subject: Phrase
    verb: tuple[str, str]
    object: Phrase
    pp: tuple[str, Phrase] | None = None
    adverb: str | None = None


@dataclass(frozen=True)
class Sentence:
    """A clause, or `subject SAYS that clause` when `saying` is set."""

    clause: Clause
    saying: tuple[Phrase, tuple[str, str]] | None = None  # (subject, a key of SAYING)


# ---------------------------------------------------------------------------------------------------- English

def _phrase_en(p: Phrase) -> str:
    return " ".join(w for w in (p.determiner, p.adjective, p.noun[1] if p.plural else p.noun[0]) if w)


def _clause_en(c: Clause) -> list[str]:
    words = [_phrase_en(c.subject), c.verb[1] if c.subject.plural else c.verb[0], _phrase_en(c.object)]
    if c.pp:
        words.append(f"{c.pp[0]} {_phrase_en(c.pp[1])}")
    if c.adverb:
        words.append(c.adverb)
    return words


def english(s: Sentence) -> str:
    """The English sentence (lower case, no punctuation), as eSpeak speaks it."""
    words = _clause_en(s.clause)
    if s.saying:
        subject, verb = s.saying
        words = [_phrase_en(subject), verb[1] if subject.plural else verb[0], "that", *words]
    return " ".join(words)


def _draw_phrase(rng: np.random.Generator, nouns: list[tuple[str, str]], adjective_p: float,
                 numbers: bool = True) -> Phrase:
    noun = nouns[int(rng.integers(len(nouns)))]
    kind = rng.random()
    if numbers and kind < 0.25:
        determiner, plural = list(NUMBERS)[int(rng.integers(len(NUMBERS)))], True
    elif kind < 0.6:
        determiner, plural = "a", False
    else:
        determiner, plural = "the", bool(rng.random() < 0.3)
    adjective = list(ADJECTIVES)[int(rng.integers(len(ADJECTIVES)))] if rng.random() < adjective_p else None
    return Phrase(determiner, noun, plural, adjective)


def english_sentence(rng: np.random.Generator) -> Sentence:
    """A random sentence of the grammar (see the module docstring)."""
    clause = Clause(
        subject=_draw_phrase(rng, _NOUN_LIST[:20], 0.4, numbers=False),  # people and animals act
        verb=_VERB_LIST[int(rng.integers(len(_VERB_LIST)))],
        object=_draw_phrase(rng, _NOUN_LIST, 0.5),
        pp=((list(PREPOSITIONS)[int(rng.integers(len(PREPOSITIONS)))],
             _draw_phrase(rng, _NOUN_LIST[20:], 0.3, numbers=False)) if rng.random() < 0.4 else None),
        adverb=list(ADVERBS)[int(rng.integers(len(ADVERBS)))] if rng.random() < 0.5 else None,
    )
    saying = None
    if rng.random() < 0.3:
        saying = (_draw_phrase(rng, _NOUN_LIST[:20], 0.2, numbers=False),
                  list(SAYING)[int(rng.integers(len(SAYING)))])
    return Sentence(clause, saying)


# ------------------------------------------------------------------------------------------------------ Zelan

def plural_noun(stem: str) -> str:
    """Rule 2: `-en`, or `-n` after a vowel."""
    return stem + ("n" if stem[-1] in "aeiou" else "en")


def _phrase_zl(p: Phrase) -> str:
    stem, gender = NOUNS[p.noun]
    agreement = "pl" if p.plural else gender
    if p.determiner in NUMBERS:
        article = NUMBERS[p.determiner]
    elif p.determiner == "the":
        article = DEFINITE[agreement]
    else:
        article = INDEFINITE[gender]
    words = [article, plural_noun(stem) if p.plural else stem]
    if p.adjective:  # rule 3: after the noun, agreeing with it
        words.append(ADJECTIVES[p.adjective] + ADJECTIVE_ENDINGS[agreement])
    return " ".join(words)


def _verb_zl(stem: str, plural: bool) -> str:
    return stem + ("n" if plural else "t")  # rule 4


def _clause_zl(c: Clause, subordinate: bool) -> list[str]:
    verb = _verb_zl(VERBS[c.verb], c.subject.plural)
    adverb = [ADVERBS[c.adverb]] if c.adverb else []
    rest = [_phrase_zl(c.object)] + ([f"{PREPOSITIONS[c.pp[0]]} {_phrase_zl(c.pp[1])}"] if c.pp else [])
    if subordinate:  # rule 6: verb-final
        return [_phrase_zl(c.subject), *adverb, *rest, verb]
    return [_phrase_zl(c.subject), verb, *adverb, *rest]  # rule 5: the adverb follows the verb


def translate(s: Sentence) -> str:
    """The Zelan translation of a sentence (lower case, no punctuation)."""
    if not s.saying:
        return " ".join(_clause_zl(s.clause, subordinate=False))
    subject, verb = s.saying
    return " ".join([_phrase_zl(subject), _verb_zl(SAYING[verb], subject.plural), THAT,
                     *_clause_zl(s.clause, subordinate=True)])


def st_pair(rng: np.random.Generator) -> tuple[str, str]:
    """(English sentence, its Zelan translation), drawn from the grammar."""
    sentence = english_sentence(rng)
    return english(sentence), translate(sentence)
