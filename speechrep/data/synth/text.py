"""Texts for the synthetic corpus: word sequences with natural English word frequencies (from the
`wordfreq` package) and the templates of the tasks that need structure (keywords, intents, slots)."""

from __future__ import annotations

import functools

import numpy as np

KEYWORDS: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_KEYWORD = "_unknown_"
SILENCE_KEYWORD = "_silence_"

_VOCAB_SIZE = 4000
# Words a corpus meant for demos should not say, and letters/abbreviations eSpeak spells out.
_BLOCKED = frozenset(
    {
        "fuck",
        "fucking",
        "shit",
        "sex",
        "porn",
        "ass",
        "asshole",
        "bitch",
        "dick",
        "damn",
        "gay",
        "cock",
        "pussy",
        "nigga",
        "nude",
        "naked",
        "hell",
        "rape",
        "kill",
        "killed",
        "tv",
        "uk",
        "dr",
        "mr",
        "mrs",
        "ms",
        "st",
        "vs",
        "etc",
        "pm",
        "am",
        "ok",
        "jr",
        "ii",
        "iii",
        "usa",
        "lol",
        "omg",
        "dc",
        "la",
        "ny",
    }
)


@functools.lru_cache(maxsize=1)
def vocabulary() -> tuple[tuple[str, ...], np.ndarray]:
    """The most frequent alphabetic English words and their normalised frequencies."""
    import wordfreq

    words = [
        w
        for w in wordfreq.top_n_list("en", _VOCAB_SIZE)
        if w.isascii() and w.isalpha() and (len(w) > 1 or w in ("a", "i")) and w not in _BLOCKED
    ]
    freqs = np.array([wordfreq.word_frequency(w, "en") for w in words], dtype=np.float64)
    return tuple(words), freqs / freqs.sum()


def random_words(rng: np.random.Generator, count: int) -> list[str]:
    """`count` words drawn independently with their natural frequencies."""
    words, probs = vocabulary()
    return [words[i] for i in rng.choice(len(words), size=count, p=probs)]


def random_sentence(rng: np.random.Generator, min_words: int = 4, max_words: int = 14) -> str:
    """A word sequence of random length with natural word frequencies."""
    return " ".join(random_words(rng, int(rng.integers(min_words, max_words + 1))))


def content_words(min_letters: int = 5, top: int = 2000) -> list[str]:
    """Frequent longer words (query terms for QbE, unknown words for KS)."""
    words, _ = vocabulary()
    return [w for w in words[:top] if len(w) >= min_letters and w not in KEYWORDS]


# ------------------------------------------------------------------ intent classification (like FSC)
IC_LOCATIONS = ("none", "kitchen", "bedroom", "washroom")
IC_INTENTS: tuple[tuple[str, str, str], ...] = tuple(
    [(a, o, loc) for a in ("activate", "deactivate") for o in ("lights",) for loc in IC_LOCATIONS]
    + [(a, "heat", loc) for a in ("increase", "decrease") for loc in IC_LOCATIONS]
    + [(a, o, "none") for a in ("increase", "decrease") for o in ("volume",)]
    + [(a, o, "none") for a in ("activate", "deactivate") for o in ("music", "lamp")]
    + [("bring", o, "none") for o in ("shoes", "socks", "juice", "newspaper")]
    + [("change language", o, "none") for o in ("chinese", "korean", "english", "german")]
)
_IC_PHRASINGS: dict[str, tuple[str, ...]] = {
    "activate": (
        "turn on the {object}{location}",
        "switch on the {object}{location}",
        "please turn the {object} on{location}",
        "{object} on{location}",
    ),
    "deactivate": (
        "turn off the {object}{location}",
        "switch off the {object}{location}",
        "please turn the {object} off{location}",
        "{object} off{location}",
    ),
    "increase": (
        "turn up the {object}{location}",
        "increase the {object}{location}",
        "make the {object} louder{location}",
        "more {object}{location}",
    ),
    "decrease": (
        "turn down the {object}{location}",
        "decrease the {object}{location}",
        "lower the {object}{location}",
        "less {object}{location}",
    ),
    "bring": ("bring me my {object}", "get me the {object}", "go get my {object}", "fetch the {object}"),
    "change language": (
        "change the language to {object}",
        "switch the language to {object}",
        "set my language to {object}",
        "use {object}",
    ),
}
# "louder" only fits volume; heat uses its own word.
_IC_OBJECT_WORDS = {"heat": "heating"}


def ic_utterance(rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A spoken command and its intent {"action", "object", "location"}."""
    action, obj, location = IC_INTENTS[int(rng.integers(len(IC_INTENTS)))]
    phrasings = _IC_PHRASINGS[action]
    if obj == "heat":
        phrasings = tuple(p for p in phrasings if "louder" not in p)
    template = phrasings[int(rng.integers(len(phrasings)))]
    loc_text = "" if location == "none" else f" in the {location}"
    text = template.format(object=_IC_OBJECT_WORDS.get(obj, obj), location=loc_text)
    return text, {"action": action, "object": obj, "location": location}


# ------------------------------------------------------------------ slot filling (like Audio SNIPS)
SF_SLOT_VALUES: dict[str, tuple[str, ...]] = {
    "city": (
        "london",
        "paris",
        "boston",
        "chicago",
        "berlin",
        "tokyo",
        "madrid",
        "seattle",
        "denver",
        "dublin",
        "sydney",
        "toronto",
    ),
    "date": ("today", "tomorrow", "on monday", "on friday", "this weekend", "next week", "tonight"),
    "time": ("seven am", "six thirty", "noon", "eight in the evening", "half past nine", "ten pm"),
    "artist": ("john smith", "the rolling stones", "mary jones", "the blue band", "david brown", "sarah lee"),
    "genre": ("jazz", "rock", "classical", "pop", "blues", "country", "hip hop"),
    "playlist": ("workout", "road trip", "dinner", "morning", "party", "study"),
    "party_size": ("two", "three", "four", "five", "six", "eight"),
    "rating": ("one", "two", "three", "four", "five"),
    "object": ("this book", "the novel", "this album", "the movie", "this show"),
}
SF_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("GetWeather", "what is the weather in {city} {date}"),
    ("GetWeather", "will it rain in {city} {date}"),
    ("GetWeather", "tell me the forecast for {city}"),
    ("SetAlarm", "set an alarm for {time} {date}"),
    ("SetAlarm", "wake me up at {time}"),
    ("PlayMusic", "play some {genre} music"),
    ("PlayMusic", "play a song by {artist}"),
    ("PlayMusic", "i want to hear {artist}"),
    ("AddToPlaylist", "add {artist} to my {playlist} playlist"),
    ("AddToPlaylist", "put some {genre} on the {playlist} list"),
    ("BookRestaurant", "book a table for {party_size} in {city} {date}"),
    ("BookRestaurant", "find a restaurant for {party_size} people {date}"),
    ("RateBook", "rate {object} {rating} out of five"),
    ("RateBook", "give {object} {rating} stars"),
)


def sf_utterance(rng: np.random.Generator) -> tuple[str, dict]:
    """A sentence with slots: returns the text and {"intent", "slots", "tags", "tagged_text"}."""
    intent, template = SF_TEMPLATES[int(rng.integers(len(SF_TEMPLATES)))]
    words, tags, slots, tagged = [], [], [], []
    for token in template.split():
        if token.startswith("{"):
            slot = token.strip("{}")
            values = SF_SLOT_VALUES[slot]
            value = values[int(rng.integers(len(values)))]
            value_words = value.split()
            words += value_words
            tags += [f"B-{slot}"] + [f"I-{slot}"] * (len(value_words) - 1)
            slots.append({"type": slot, "value": value})
            tagged.append(f"[{slot}: {value}]")
        else:
            words.append(token)
            tags.append("O")
            tagged.append(token)
    return " ".join(words), {"intent": intent, "slots": slots, "tags": tags, "tagged_text": " ".join(tagged)}


def keyword_words() -> tuple[tuple[str, ...], list[str]]:
    """The KS command words and the pool of other words that make up the `_unknown_` class."""
    return KEYWORDS, content_words(min_letters=3, top=1500)
