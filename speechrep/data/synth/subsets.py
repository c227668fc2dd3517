"""One planner per subset: each turns a size, speakers and a random generator into `Item`s (a synthesis
job plus how to turn its result into lhotse cuts) and split-level files (trials, RTTM, QbE truth).
Planning happens in the parent, in a fixed order, so the corpus depends only on the seed."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

from speechrep.data.synth import text as texts
from speechrep.data.synth.render import (
    SAMPLE_RATE,
    UtteranceSpec,
    job_conversation,
    job_enhancement,
    job_separation,
    job_single,
)
from speechrep.data.synth.speakers import Speaker, make_speakers
from speechrep.data.trials import make_trials
from speechrep.storage import atomic_write_text

SPLITS = ("train", "dev", "test")
ER_STYLES: dict[str, tuple[float, int, float, float, float]] = {
    # style: (rate factor, pitch shift, pitch-range factor, loudness dB, 3 kHz tilt dB)
    "neutral": (1.0, 0, 1.0, 0.0, 0.0),
    "happy": (1.12, 14, 1.6, 2.0, 3.0),
    "angry": (1.2, 6, 1.3, 6.0, 6.0),
    "sad": (0.8, -10, 0.5, -5.0, -6.0),
}
ER_FOLDS = 5
_REVERB_PROB, _NOISE_PROB, _SNR_RANGE = 0.25, 0.5, (5.0, 25.0)
SE_SNRS = (0.0, 5.0, 10.0, 15.0)


@dataclass
class Item:
    """A job (the utterances to speak, then `fn(syntheses, *args)`) and how its result becomes cuts."""

    job: tuple[list[UtteranceSpec], Callable[..., Any], tuple]
    to_cuts: Callable[[dict], list[MonoCut]]
    # A single utterance's `_single_item` arguments (spec, custom, ...), from which the out-of-domain test
    # splits (`domains`) make their variants of it; None for mixtures and conversations.
    single: dict[str, Any] | None = None


@dataclass
class Plan:
    """Everything one subset will contain: items per split, and split-level files built from the cuts."""

    speakers: dict[str, list[Speaker]]
    items: dict[str, list[Item]]
    finish: Callable[[Path, dict[str, list[MonoCut]]], None] | None = None


def recording(rec_id: str, path: Path, num_samples: int) -> Recording:
    """A 16 kHz mono FLAC recording manifest (built without re-reading the file)."""
    return Recording(
        id=rec_id,
        sources=[AudioSource(type="file", channels=[0], source=str(path))],
        sampling_rate=SAMPLE_RATE,
        num_samples=num_samples,
        duration=num_samples / SAMPLE_RATE,
    )


def _spec(
    rng: np.random.Generator,
    speaker: Speaker,
    text: str,
    effects: bool = True,
    style: str = "neutral",
    **kwargs,
) -> UtteranceSpec:
    rate_f, pitch_shift, range_f, level_db, tilt_db = ER_STYLES[style]
    reverb = float(rng.uniform(0.2, 0.8)) if effects and rng.random() < _REVERB_PROB else None
    snr = float(rng.uniform(*_SNR_RANGE)) if effects and rng.random() < _NOISE_PROB else None
    return UtteranceSpec(
        text=text,
        speaker=speaker,
        seed=int(rng.integers(2**31)),
        rate=int(np.clip(speaker.rate * rate_f * rng.uniform(0.9, 1.1), 80, 450)),
        pitch=int(np.clip(speaker.pitch + pitch_shift + rng.integers(-6, 7), 0, 99)),
        pitch_range=int(np.clip(speaker.pitch_range * range_f + rng.integers(-8, 9), 0, 99)),
        level_db=level_db,
        tilt_db=tilt_db,
        reverb_rt60=reverb,
        snr=snr,
        **kwargs,
    )


def _alignment_fields(meta: dict) -> dict:
    if "reference_phones" in meta:  # a foreign voice read English (`render.job_accented`): no phone alignment
        return {"phones": meta["reference_phones"], "word_alignment": [list(w) for w in meta["words"]]}
    return {
        "phones": [p for p, _, _ in meta["phones"]],
        "phone_alignment": [list(p) for p in meta["phones"]],
        "word_alignment": [list(w) for w in meta["words"]],
    }


def _single_item(
    audio_dir: Path,
    cut_id: str,
    spec: UtteranceSpec,
    custom: dict | None = None,
    cut_custom: dict | None = None,
    alignments: bool = True,
    transcript: str | None = None,
) -> Item:
    """One utterance; its supervision's text is `transcript`, or the spoken text when None."""
    path = audio_dir / f"{cut_id}.flac"

    def to_cuts(meta: dict) -> list[MonoCut]:
        rec = recording(cut_id, path, meta["num_samples"])
        sup_custom = dict(custom or {})
        if alignments:
            sup_custom.update(_alignment_fields(meta))
        sup = SupervisionSegment(
            id=cut_id,
            recording_id=cut_id,
            start=0.0,
            duration=rec.duration,
            channel=0,
            text=spec.text if transcript is None else transcript,
            speaker=spec.speaker.id,
            language="en",
            custom=sup_custom or None,
        )
        return [
            MonoCut(
                id=cut_id,
                start=0.0,
                duration=rec.duration,
                channel=0,
                recording=rec,
                supervisions=[sup],
                custom={**(cut_custom or {}), **_effects(spec)} or None,
            )
        ]

    single = {"spec": spec, "custom": custom, "cut_custom": cut_custom, "alignments": alignments,
              "transcript": transcript}
    return Item(([spec], job_single, (spec, path)), to_cuts, single)


def _effects(spec: UtteranceSpec) -> dict:
    # Recorded so that analyses can separate clean from degraded utterances.
    effects = {"background_snr_db": spec.snr, "reverb_rt60_s": spec.reverb_rt60}
    return (
        {"effects": {k: round(v, 3) for k, v in effects.items() if v is not None}}
        if any(v is not None for v in effects.values())
        else {}
    )


def _speakers(
    rng: np.random.Generator, counts: tuple[int, int, int], prefix: str
) -> dict[str, list[Speaker]]:
    everyone = make_speakers(rng, sum(counts), prefix)
    bounds = np.cumsum((0,) + tuple(counts))
    return {split: everyone[bounds[i] : bounds[i + 1]] for i, split in enumerate(SPLITS)}


def _assign(rng: np.random.Generator, speakers: list[Speaker], count: int) -> list[Speaker]:
    # Round-robin over a shuffled order: every speaker gets about the same number of utterances.
    order = [speakers[i] for i in rng.permutation(len(speakers))]
    return [order[i % len(order)] for i in range(count)]


def _utterances(
    rng: np.random.Generator,
    spk: dict[str, list[Speaker]],
    counts: tuple[int, int, int],
    prefix: str,
    make: Callable[[str, int, Speaker], Item],
) -> dict[str, list[Item]]:
    """Per split, `make(cut_id, i, speaker)` for each of its utterances, speakers assigned round-robin.

    The random draws keep one order (a split's speaker assignment, then its utterances one by one), which
    is what makes the corpus a function of the seed alone."""
    return {
        split: [make(f"{prefix}_{split}_{i:05d}", i, s) for i, s in enumerate(_assign(rng, spk[split], n))]
        for split, n in zip(SPLITS, counts)
    }


# ------------------------------------------------------------------------------------------- planners
def plan_sentences(
    name: str,
    rng: np.random.Generator,
    audio_dir: Path,
    speakers: tuple[int, int, int],
    counts: tuple[int, int, int],
    words: tuple[int, int] = (4, 14),
) -> Plan:
    """unlabeled / pr / asr: random sentences with text, phones and alignments; speaker-disjoint splits."""
    spk = _speakers(rng, speakers, f"{name}_spk")

    def make(cut_id: str, i: int, speaker: Speaker) -> Item:
        return _single_item(audio_dir, cut_id, _spec(rng, speaker, texts.random_sentence(rng, *words)))

    return Plan(spk, _utterances(rng, spk, counts, name, make))


def plan_ks(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Keyword spotting: 1 s clips of 10 commands, other words (`_unknown_`) and noise (`_silence_`)."""
    spk = _speakers(rng, speakers, "ks_spk")
    commands, others = texts.keyword_words()
    labels = list(commands) + [texts.UNKNOWN_KEYWORD, texts.SILENCE_KEYWORD]

    def make(cut_id: str, i: int, speaker: Speaker) -> Item:
        label = labels[i % len(labels)]
        word = {
            texts.UNKNOWN_KEYWORD: others[int(rng.integers(len(others)))],
            texts.SILENCE_KEYWORD: "",
        }.get(label, label)
        spec = _spec(rng, speaker, word, total_duration=1.0)
        if label == texts.SILENCE_KEYWORD and spec.snr is None:
            spec = UtteranceSpec(**{**spec.__dict__, "snr": float(rng.uniform(*_SNR_RANGE))})
        return _single_item(audio_dir, cut_id, spec, {"keyword": label})

    return Plan(spk, _utterances(rng, spk, counts, "ks", make))


def plan_sid(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Closed-set speaker identification: the same speakers in every split, different sentences."""
    everyone = make_speakers(rng, speakers[0], "sid_spk")
    spk = {split: everyone for split in SPLITS}

    def make(cut_id: str, i: int, speaker: Speaker) -> Item:
        return _single_item(audio_dir, cut_id, _spec(rng, speaker, texts.random_sentence(rng, 3, 10)))

    return Plan(spk, _utterances(rng, spk, counts, "sid", make))


def plan_asv(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Speaker verification: disjoint speakers per split, trials (target/non-target pairs) per split."""
    plan = plan_sentences("asv", rng, audio_dir, speakers, counts)
    trial_rng = np.random.default_rng(int(rng.integers(2**31)))

    def finish(subset_dir: Path, cuts: dict[str, list[MonoCut]]) -> None:
        for split in SPLITS:
            atomic_write_text(
                subset_dir / f"{split}_trials.txt",
                "".join(f"{label} {a} {b}\n" for label, a, b in make_trials(trial_rng, cuts[split])),
            )

    plan.finish = finish
    return plan


def plan_er(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Emotion: four prosodic styles; speakers in `ER_FOLDS` groups (test: last fold, dev: the one before)."""
    spk = _speakers(rng, speakers, "er_spk")
    fold_of: dict[str, int] = {}
    for i, s in enumerate(spk["train"]):
        fold_of[s.id] = 1 + i % (ER_FOLDS - 2)
    fold_of.update({s.id: ER_FOLDS - 1 for s in spk["dev"]})
    fold_of.update({s.id: ER_FOLDS for s in spk["test"]})
    styles = list(ER_STYLES)

    def make(cut_id: str, i: int, speaker: Speaker) -> Item:
        style = styles[i % len(styles)]
        spec = _spec(rng, speaker, texts.random_sentence(rng, 3, 9), style=style)
        return _single_item(audio_dir, cut_id, spec, {"emotion": style, "fold": fold_of[speaker.id]})

    return Plan(spk, _utterances(rng, spk, counts, "er", make))


def plan_ic(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Intent classification: commands with action/object/location, several phrasings per intent."""
    spk = _speakers(rng, speakers, "ic_spk")

    def make(cut_id: str, i: int, speaker: Speaker) -> Item:
        sentence, intent = texts.ic_utterance(rng)
        return _single_item(audio_dir, cut_id, _spec(rng, speaker, sentence), {"intent": intent})

    return Plan(spk, _utterances(rng, spk, counts, "ic", make))


def plan_sf(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Slot filling: templated requests with slot types and values (BIO tags per word)."""
    spk = _speakers(rng, speakers, "sf_spk")

    def make(cut_id: str, i: int, speaker: Speaker) -> Item:
        sentence, labels = texts.sf_utterance(rng)
        return _single_item(audio_dir, cut_id, _spec(rng, speaker, sentence), labels)

    return Plan(spk, _utterances(rng, spk, counts, "sf", make))


def plan_qbe(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Query-by-example: spoken single-word queries and sentence documents that contain a query or not."""
    spk = _speakers(rng, speakers, "qbe_spk")
    vocabulary = texts.content_words(min_letters=5)
    items = {}
    for split, n in zip(SPLITS, counts):
        terms = [vocabulary[i] for i in rng.choice(len(vocabulary), size=max(2, n // 4), replace=False)]
        queries = [
            _single_item(
                audio_dir,
                f"qbe_{split}_q{i:04d}",
                _spec(rng, s, term, effects=False, pad=(0.2, 0.2)),
                {"role": "query", "term": term},
            )
            for i, (term, s) in enumerate(zip(terms, _assign(rng, spk[split], len(terms))))
        ]
        docs = []
        for i, speaker in enumerate(_assign(rng, spk[split], n)):
            words = texts.random_words(rng, int(rng.integers(5, 12)))
            if i % 2 == 0:  # half the documents contain one of the query terms
                words.insert(int(rng.integers(len(words) + 1)), terms[(i // 2) % len(terms)])
            contained = sorted({t for t in terms if t in words})
            docs.append(
                _single_item(
                    audio_dir,
                    f"qbe_{split}_d{i:04d}",
                    _spec(rng, speaker, " ".join(words)),
                    {"role": "document", "contains": contained},
                )
            )
        items[split] = queries + docs
    return Plan(spk, items, finish=_finish_qbe)


def _finish_qbe(subset_dir: Path, cuts: dict[str, list[MonoCut]]) -> None:
    for split in SPLITS:
        queries = [c for c in cuts[split] if c.supervisions[0].custom["role"] == "query"]
        docs = [c for c in cuts[split] if c.supervisions[0].custom["role"] == "document"]
        lines = [
            f"{q.id} {d.id} {int(q.supervisions[0].custom['term'] in d.supervisions[0].custom['contains'])}\n"
            for q, d in itertools.product(queries, docs)
        ]
        atomic_write_text(subset_dir / f"{split}_truth.txt", "".join(lines))


def plan_se(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Speech enhancement: noisy recordings with the clean reference as `cut.clean`."""
    spk = _speakers(rng, speakers, "se_spk")

    def make(cut_id: str, i: int, speaker: Speaker) -> Item:
        snr = SE_SNRS[i % len(SE_SNRS)]
        spec = UtteranceSpec(
            **{**_spec(rng, speaker, texts.random_sentence(rng), effects=False).__dict__, "snr": snr}
        )
        return _enhancement_item(audio_dir, cut_id, spec)

    return Plan(spk, _utterances(rng, spk, counts, "se", make))


def _enhancement_item(audio_dir: Path, cut_id: str, spec: UtteranceSpec) -> Item:
    noisy, clean = audio_dir / f"{cut_id}.flac", audio_dir / f"{cut_id}_clean.flac"

    def to_cuts(meta: dict) -> list[MonoCut]:
        rec = recording(cut_id, noisy, meta["num_samples"])
        sup = SupervisionSegment(
            id=cut_id,
            recording_id=cut_id,
            start=0.0,
            duration=rec.duration,
            channel=0,
            text=spec.text,
            speaker=spec.speaker.id,
            language="en",
            custom={"snr": spec.snr, **_alignment_fields(meta)},
        )
        return [
            MonoCut(
                id=cut_id,
                start=0.0,
                duration=rec.duration,
                channel=0,
                recording=rec,
                supervisions=[sup],
                custom={"clean": recording(f"{cut_id}_clean", clean, meta["num_samples"])},
            )
        ]

    return Item(([spec], job_enhancement, (spec, noisy, clean)), to_cuts)


def plan_ss(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Source separation: two-speaker mixtures; sources as `cut.source1`, `cut.source2` (mixture = sum)."""
    spk = _speakers(rng, speakers, "ss_spk")
    items = {}
    for split, n in zip(SPLITS, counts):
        items[split] = []
        for i in range(n):
            a, b = (spk[split][j] for j in rng.choice(len(spk[split]), size=2, replace=False))
            specs = tuple(_spec(rng, s, texts.random_sentence(rng, 4, 10), effects=False) for s in (a, b))
            items[split].append(
                _separation_item(audio_dir, f"ss_{split}_{i:05d}", specs, float(rng.uniform(-5, 5)))
            )
    return Plan(spk, items)


def _separation_item(
    audio_dir: Path, cut_id: str, specs: tuple[UtteranceSpec, UtteranceSpec], level_db: float
) -> Item:
    paths = tuple(audio_dir / f"{cut_id}{suffix}.flac" for suffix in ("", "_s1", "_s2"))

    def to_cuts(meta: dict) -> list[MonoCut]:
        n = meta["num_samples"]
        rec = recording(cut_id, paths[0], n)
        sups = [
            SupervisionSegment(
                id=f"{cut_id}_s{k + 1}",
                recording_id=cut_id,
                start=0.0,
                duration=rec.duration,
                channel=0,
                text=spec.text,
                speaker=spec.speaker.id,
                language="en",
                custom={"source": k + 1, **_alignment_fields(src)},
            )
            for k, (spec, src) in enumerate(zip(specs, meta["sources"]))
        ]
        return [
            MonoCut(
                id=cut_id,
                start=0.0,
                duration=rec.duration,
                channel=0,
                recording=rec,
                supervisions=sups,
                custom={
                    "source1": recording(f"{cut_id}_s1", paths[1], n),
                    "source2": recording(f"{cut_id}_s2", paths[2], n),
                    "level_db": round(level_db, 3),
                },
            )
        ]

    return Item((list(specs), job_separation, (specs, level_db, paths)), to_cuts)


def plan_sd(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Diarization: two-speaker conversations with pauses and overlaps; one supervision per turn + RTTM."""
    spk = _speakers(rng, speakers, "sd_spk")
    items = {}
    for split, n in zip(SPLITS, counts):
        items[split] = []
        for i in range(n):
            pair = [spk[split][j] for j in rng.choice(len(spk[split]), size=2, replace=False)]
            turns = int(rng.integers(3, 7))
            who = pair[:]  # both speak; after that turns mostly alternate, sometimes one speaker goes on
            for _ in range(turns - 2):
                who.append(who[-2] if rng.random() < 0.85 else who[-1])
            specs = [_spec(rng, s, texts.random_sentence(rng, 2, 8), effects=False) for s in who]
            gaps = [float(rng.uniform(-0.8, 1.2)) for _ in range(turns - 1)]
            snr = float(rng.uniform(*_SNR_RANGE)) if rng.random() < _NOISE_PROB else None
            items[split].append(
                _conversation_item(
                    audio_dir, f"sd_{split}_{i:05d}", specs, gaps, snr, int(rng.integers(2**31))
                )
            )
    return Plan(spk, items, finish=_finish_sd)


def _conversation_item(
    audio_dir: Path, cut_id: str, specs: list[UtteranceSpec], gaps: list[float], snr: float | None, seed: int
) -> Item:
    path = audio_dir / f"{cut_id}.flac"

    def to_cuts(meta: dict) -> list[MonoCut]:
        rec = recording(cut_id, path, meta["num_samples"])
        sups = [
            SupervisionSegment(
                id=f"{cut_id}_t{k:02d}",
                recording_id=cut_id,
                start=turn["start"],
                duration=round(turn["end"] - turn["start"], 4),
                channel=0,
                text=turn["text"],
                speaker=turn["speaker"],
                language="en",
            )
            for k, turn in enumerate(meta["turns"])
        ]
        return [
            MonoCut(id=cut_id, start=0.0, duration=rec.duration, channel=0, recording=rec, supervisions=sups)
        ]

    return Item((specs, job_conversation, (specs, gaps, snr, seed, path)), to_cuts)


def _finish_sd(subset_dir: Path, cuts: dict[str, list[MonoCut]]) -> None:
    for split in SPLITS:
        lines = [
            f"SPEAKER {c.id} 1 {s.start:.3f} {s.duration:.3f} <NA> <NA> {s.speaker} <NA> <NA>\n"
            for c in cuts[split]
            for s in c.supervisions
        ]
        atomic_write_text(subset_dir / f"{split}.rttm", "".join(lines))


OOD_ASR_LANGUAGES: tuple[str, ...] = ("es", "de", "fr")  # voices: `hear_tasks.LANGUAGES`
OOD_ASR_DOMAINS: tuple[str, ...] = (*OOD_ASR_LANGUAGES, "spontaneous")


def plan_ood_asr(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """OOD-ASR (SUPERB-SG): one ASR sub-corpus per domain of `OOD_ASR_DOMAINS`, the sizes per domain.

    es/de/fr: speakers with eSpeak voices of the language read 4-14 words drawn with its wordfreq frequencies
    (lower case; the characters are the language's own, accents included; no phone labels). `spontaneous`:
    English speakers read sentences like `asr`'s with fillers, a repeated word and hesitation pauses
    (`domains.spontaneous_text`), transcribed verbatim with phones and alignments. Every cut has
    `custom["domain"]`; `finish` writes each domain's splits to `<domain>/<split>.jsonl.gz`."""
    import dataclasses

    from speechrep.data.synth.domains import spontaneous_text
    from speechrep.data.synth.hear_tasks import LANGUAGES, _speaker_pools, _vocabulary

    def in_language(item: Item, language: str) -> Item:
        def to_cuts(meta: dict) -> list[MonoCut]:
            return [dataclasses.replace(c, supervisions=[dataclasses.replace(s, language=language)
                                                         for s in c.supervisions])
                    for c in item.to_cuts(meta)]

        return dataclasses.replace(item, to_cuts=to_cuts)

    def make(domain: str) -> Callable[[str, int, Speaker], Item]:
        def item(cut_id: str, i: int, speaker: Speaker) -> Item:
            count = int(rng.integers(4, 15))
            if domain == "spontaneous":
                ssml, transcript = spontaneous_text(rng, texts.random_words(rng, count))
                spec = _spec(rng, speaker, ssml, ssml=True)
                return _single_item(audio_dir, cut_id, spec, None, {"domain": domain}, transcript=transcript)
            words, probs = _vocabulary(domain)
            text = " ".join(words[j] for j in rng.choice(len(words), size=count, p=probs)).lower()
            made = _single_item(audio_dir, cut_id, _spec(rng, speaker, text), None, {"domain": domain},
                                alignments=False)
            return in_language(made, domain)

        return item

    everyone: dict[str, list[Speaker]] = {split: [] for split in SPLITS}
    items: dict[str, list[Item]] = {split: [] for split in SPLITS}
    for domain in OOD_ASR_DOMAINS:
        prefix = f"ood_asr_{domain}"
        if domain == "spontaneous":
            spk = _speakers(rng, speakers, f"{prefix}_spk")
        else:  # the lang_id task's speakers: voices of the language (its splits are named train/valid/test)
            pools = _speaker_pools(rng, speakers, f"{prefix}_spk", LANGUAGES[domain])
            spk = dict(zip(SPLITS, pools.values()))
        for split, made in _utterances(rng, spk, counts, prefix, make(domain)).items():
            items[split] += made
            everyone[split] += spk[split]
    return Plan(everyone, items, finish=_finish_ood_asr)


def _finish_ood_asr(subset_dir: Path, cuts: dict[str, list[MonoCut]]) -> None:
    from speechrep.data.synth.corpus import write_cutset

    for domain in OOD_ASR_DOMAINS:
        for split in SPLITS:
            write_cutset([c for c in cuts[split] if c.custom["domain"] == domain],
                         subset_dir / domain / f"{split}.jsonl.gz")


def plan_st(
    rng: np.random.Generator, audio_dir: Path, speakers: tuple[int, int, int], counts: tuple[int, int, int]
) -> Plan:
    """Speech translation (SUPERB-SG ST): English sentences of a small grammar spoken by English voices, each
    cut's supervision carrying `text` (English) and `custom.translation` (its Zelan translation by the
    rule-based translator of `translation.py`), `custom.target_language` (`zl`); speaker-disjoint splits."""
    from speechrep.data.synth.translation import ZELAN, st_pair

    spk = _speakers(rng, speakers, "st_spk")

    def make(cut_id: str, i: int, speaker: Speaker) -> Item:
        sentence, translation = st_pair(rng)
        return _single_item(audio_dir, cut_id, _spec(rng, speaker, sentence),
                            {"translation": translation, "target_language": ZELAN})

    return Plan(spk, _utterances(rng, spk, counts, "st", make))


PLANNERS: dict[str, Callable[..., Plan]] = {
    "unlabeled": lambda rng, d, s, c: plan_sentences("unlabeled", rng, d, s, c, words=(6, 22)),
    "pr": lambda rng, d, s, c: plan_sentences("pr", rng, d, s, c),
    "asr": lambda rng, d, s, c: plan_sentences("asr", rng, d, s, c),
    "ks": plan_ks,
    "qbe": plan_qbe,
    "sid": plan_sid,
    "asv": plan_asv,
    "sd": plan_sd,
    "er": plan_er,
    "ic": plan_ic,
    "sf": plan_sf,
    "se": plan_se,
    "ss": plan_ss,
    "ood_asr": plan_ood_asr,  # opt-in (corpus.OPT_IN_SUBSETS): never in the default corpus
    "st": plan_st,  # opt-in, like ood_asr
}
