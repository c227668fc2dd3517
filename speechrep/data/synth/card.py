"""Subset cards (card.json + card.md): counts, hours, speakers, label inventory and, for ks/sid/er and the
prosodic subsets, a sanity baseline: mean-pooled log-mel + logistic regression, which should beat chance but
not be perfect. The prosodic subsets also get a text-only baseline (bag of words of the transcript), which
must be at chance: their words are the same in every class, the acoustic differences between their classes and
a baseline on prosodic measures alone (`speechrep.data.synth.acoustics`)."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
from lhotse import MonoCut

from speechrep.data.synth.acoustics import class_differences, prosodic_baseline, utterance_measures
from speechrep.data.synth.prosodic import PROSODIC_PLANNERS
from speechrep.data.synth.speakers import Speaker
from speechrep.data.synth.subsets import SPLITS
from speechrep.storage import atomic_write_text

# Which label each baseline classifies.
BASELINE_LABELS = {
    "ks": lambda cut: cut.supervisions[0].custom["keyword"],
    "sid": lambda cut: cut.supervisions[0].speaker,
    "er": lambda cut: cut.supervisions[0].custom["emotion"],
    **{name: (lambda cut, key=name: cut.supervisions[0].custom[key]) for name in PROSODIC_PLANNERS},
}


def _inventory(name: str, cuts: list[MonoCut]) -> dict:
    sups = [s for c in cuts for s in c.supervisions]
    count = lambda values: dict(sorted(collections.Counter(values).items()))
    if name == "pr":
        return {"phones": count(p for s in sups for p in s.custom["phones"])}
    if name == "asr":
        return {"characters": count(ch for s in sups for ch in s.text)}
    if name == "ks":
        return {"keyword": count(s.custom["keyword"] for s in sups)}
    if name == "er":
        return {
            "emotion": count(s.custom["emotion"] for s in sups),
            "fold": count(s.custom["fold"] for s in sups),
        }
    if name == "ic":
        return {key: count(s.custom["intent"][key] for s in sups) for key in ("action", "object", "location")}
    if name == "sf":
        return {
            "intent": count(s.custom["intent"] for s in sups),
            "slot": count(slot["type"] for s in sups for slot in s.custom["slots"]),
        }
    if name == "se":
        return {"snr_db": count(str(s.custom["snr"]) for s in sups)}
    if name in PROSODIC_PLANNERS:
        return {name: count(s.custom[name] for s in sups), "sentences": len({s.text for s in sups})}
    if name == "qbe":
        return {"role": count(s.custom["role"] for s in sups)}
    if name == "sd":
        return {
            "turns": len(sups),
            "overlapped_turn_pairs": sum(
                b.start < a.end for c in cuts for a, b in zip(c.supervisions, c.supervisions[1:])
            ),
        }
    return {}


def logmel_baseline(cuts: dict[str, list[MonoCut]], label_of) -> dict:
    """Train logistic regression on mean-pooled 40-bin log-mel of `train`, report accuracy on `test`."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from speechrep.audio.features import fbank

    def features(split: str) -> tuple[np.ndarray, list[str]]:
        pooled = []
        for start in range(0, len(cuts[split]), 32):  # batched: one padded call per 32 cuts
            wavs = [torch.from_numpy(c.load_audio()[0]) for c in cuts[split][start : start + 32]]
            lengths = torch.tensor([w.numel() for w in wavs])
            feats, frames = fbank(
                torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths, num_mel_bins=40
            )
            mask = (torch.arange(feats.shape[1])[None, :] < frames[:, None]).unsqueeze(-1)
            pooled.append(((feats * mask).sum(1) / frames[:, None].clamp(min=1)).numpy())
        return np.concatenate(pooled), [label_of(c) for c in cuts[split]]

    x_train, y_train = features("train")
    x_test, y_test = features("test")
    if len(set(y_train)) < 2 or not y_test:
        return {}
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x_train, y_train)
    accuracy = float(np.mean(model.predict(x_test) == np.array(y_test)))
    majority = collections.Counter(y_test).most_common(1)[0][1] / len(y_test)
    return {
        "features": "mean-pooled 40-bin log-mel",
        "classifier": "logistic regression",
        "test_accuracy": round(accuracy, 4),
        "chance_majority": round(majority, 4),
        "num_classes": len(set(y_train) | set(y_test)),
        "train_examples": len(y_train),
    }


def text_baseline(cuts: dict[str, list[MonoCut]], label_of) -> dict:
    """Train logistic regression on bag-of-words counts of `train` transcripts, report accuracy on `test`."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = {split: [c.supervisions[0].text for c in cuts[split]] for split in ("train", "test")}
    labels = {split: [str(label_of(c)) for c in cuts[split]] for split in ("train", "test")}
    if len(set(labels["train"])) < 2 or not labels["test"]:
        return {}
    model = make_pipeline(CountVectorizer(), LogisticRegression(max_iter=2000))
    model.fit(texts["train"], labels["train"])
    accuracy = float(np.mean(model.predict(texts["test"]) == np.array(labels["test"])))
    return {
        "features": "bag of words of the transcript",
        "classifier": "logistic regression",
        "test_accuracy": round(accuracy, 4),
        "chance": round(1 / len(set(labels["train"]) | set(labels["test"])), 4),
    }


def write_card(
    subset_dir: Path,
    name: str,
    preset: str,
    seed: int,
    cuts: dict[str, list[MonoCut]],
    speakers: dict[str, list[Speaker]],
    failures: int,
) -> dict:
    """Write card.json and card.md for one subset and return the card."""
    splits = {}
    for split in SPLITS:
        spk = sorted({s.speaker for c in cuts[split] for s in c.supervisions})
        splits[split] = {
            "cuts": len(cuts[split]),
            "hours": round(sum(c.duration for c in cuts[split]) / 3600, 4),
            "speakers": len(spk),
        }
        if name == "qbe":  # documents and queries live in separate manifests
            queries = sum(c.supervisions[0].custom["role"] == "query" for c in cuts[split])
            splits[split].update(cuts=len(cuts[split]) - queries, queries=queries)
    card = {
        "subset": name,
        "preset": preset,
        "seed": seed,
        "sample_rate": 16000,
        "splits": splits,
        "speaker_disjoint_splits": name != "sid",
        "failed_utterances": failures,
        "labels": _inventory(name, [c for split in SPLITS for c in cuts[split]]),
        "speakers": {
            split: [
                {"id": s.id, "voice": s.voice, "pitch": s.pitch, "pitch_range": s.pitch_range, "rate": s.rate}
                for s in speakers[split]
            ]
            for split in SPLITS
        },
    }
    if name in BASELINE_LABELS:
        card["baseline"] = logmel_baseline(cuts, BASELINE_LABELS[name])
    if name in PROSODIC_PLANNERS:
        card["text_baseline"] = text_baseline(cuts, BASELINE_LABELS[name])
        measured = {split: [(c, utterance_measures(name, c)) for c in cuts[split]] for split in SPLITS}
        card["acoustics"] = class_differences(name, [pair for split in SPLITS for pair in measured[split]])
        card["prosodic_baseline"] = prosodic_baseline(name, measured["train"], measured["test"])
    atomic_write_text(subset_dir / "card.json", json.dumps(card, indent=1) + "\n")
    lines = [
        f"# synthetic `{name}` ({preset} preset, seed {seed})",
        "",
        "| split | cuts | hours | speakers |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s} | {v['cuts']} | {v['hours']:.3f} | {v['speakers']} |" for s, v in splits.items()]
    if card.get("baseline"):
        b = card["baseline"]
        lines += [
            "",
            f"Sanity baseline ({b['features']} + {b['classifier']}): test accuracy "
            f"{b['test_accuracy']:.3f} vs majority-class chance {b['chance_majority']:.3f}.",
        ]
    if card.get("text_baseline"):
        b = card["text_baseline"]
        lines += [
            "",
            f"Text-only baseline ({b['features']} + {b['classifier']}): test accuracy "
            f"{b['test_accuracy']:.3f} vs chance {b['chance']:.3f}.",
        ]
    if card.get("prosodic_baseline"):
        b = card["prosodic_baseline"]
        lines += ["", f"Prosodic baseline ({b['features']} + {b['classifier']}): test accuracy "
                  f"{b['test_accuracy']:.3f}."]
    if card.get("acoustics"):
        lines += ["", "Acoustics (`speechrep.data.synth.acoustics`): `" + json.dumps(card["acoustics"]) + "`"]
    if card["labels"]:
        lines += ["", "Labels: `" + json.dumps(card["labels"])[:2000] + "`"]
    atomic_write_text(subset_dir / "card.md", "\n".join(lines) + "\n")
    return card


def write_domain_card(
    subset_dir: Path, name: str, split: str, preset: str, seed: int, cuts: list[MonoCut]
) -> dict:
    """Write `<split>.card.json` for an out-of-domain test split (`domains`): counts, hours, its speakers'
    voices, the eSpeak rates (words per minute) it was spoken at and its label inventory; return the card."""
    voices = {s.speaker: c.custom["voice"] for c in cuts for s in c.supervisions}
    rates = [c.custom["wpm"] for c in cuts]
    card = {
        "subset": name,
        "split": split,
        "domain": cuts[0].custom["domain"] if cuts else None,
        "preset": preset,
        "seed": seed,
        "cuts": len(cuts),
        "hours": round(sum(c.duration for c in cuts) / 3600, 4),
        "speakers": dict(sorted(voices.items())),
        "wpm": {"min": min(rates), "median": float(np.median(rates)), "max": max(rates)} if rates else {},
        "labels": _inventory(name, cuts),
    }
    atomic_write_text(subset_dir / f"{split}.card.json", json.dumps(card, indent=1) + "\n")
    return card
