"""A parallel voice-conversion corpus from the synthetic speakers: the same sentences in many voices.

`make_parallel_corpus(out, num_speakers, own_sentences, shared_sentences)` renders with eSpeak NG (the
mini-SUPERB's speakers, clean: no reverberation or noise):
- every speaker's `own_sentences` sentences, different per speaker (reference speech for kNN-VC, training
  speech of the `vc` task's target);
- `shared_sentences` sentences spoken by every speaker (parallel sources and references for MCD).
Manifests (lhotse, phones in `custom["phones"]`, speaker ids `vc_spk000`, ...):
- `OUT/vc/train`: the target's (speaker 0) own sentences; `OUT/vc/dev` and `OUT/vc/test`: the other
  speakers' shared sentences (first and second half), each with `custom["target_audio"]`, the target's
  rendition of the same sentence — the layout of the `vc` task (VCC 2020 task 1, parallel evaluation);
- `OUT/vc_pool/train`: every speaker's own sentences, `OUT/vc_pool/dev`: every speaker's shared ones (each
  cut with `custom["sentence"]`: "own" or "shared", and its index).
The same arguments and seed render the same corpus; a finished corpus is not rendered again.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from lhotse import CutSet, MonoCut, SupervisionSegment

from speechrep.audio import save_audio
from speechrep.data.synth import espeak
from speechrep.data.synth.corpus import write_cutset
from speechrep.data.synth.render import UtteranceSpec, render_speech, synthesis_request
from speechrep.data.synth.speakers import make_speakers
from speechrep.data.synth.subsets import recording
from speechrep.data.synth.text import random_sentence
from speechrep.storage import OutputFolder, atomic_write_json, disk_errors

SAMPLE_RATE = 16000


def _render(spec: UtteranceSpec, path: Path) -> tuple[int, list[str]]:
    """Render one utterance to `path`; (number of samples, phones)."""
    speech, _ = render_speech(spec, espeak.synthesize(**synthesis_request(spec)), background=False)
    save_audio(path, speech.audio, SAMPLE_RATE)
    return int(speech.audio.size), [p for p, _, _ in speech.phones]


def make_parallel_corpus(out: Path, num_speakers: int = 6, own_sentences: int = 40,
                         shared_sentences: int = 10, seed: int = 0) -> dict[str, CutSet]:
    """Render the corpus (see the module docstring); returns the manifests by `subset/split`."""
    out = Path(out)
    settings = {"num_speakers": num_speakers, "own_sentences": own_sentences,
                "shared_sentences": shared_sentences, "seed": seed}
    with OutputFolder(out, "parallel VC corpus", settings), disk_errors(out):
        done = out / "parallel.json"
        if not done.is_file():
            _render_corpus(out, num_speakers, own_sentences, shared_sentences, seed)
            atomic_write_json(done, settings)
    return {name: CutSet.from_file(out / f"{name}.jsonl.gz").to_eager()
            for name in ("vc/train", "vc/dev", "vc/test", "vc_pool/train", "vc_pool/dev")}


def _render_corpus(out: Path, num_speakers: int, own_sentences: int, shared_sentences: int,
                   seed: int) -> None:
    rng = np.random.default_rng(seed)
    speakers = make_speakers(rng, num_speakers, "vc_spk")
    shared = [random_sentence(rng) for _ in range(shared_sentences)]
    audio = out / "audio"
    pool, rendered = [], {}
    for speaker in speakers:
        texts = [("own", i, random_sentence(rng)) for i in range(own_sentences)] + \
            [("shared", i, t) for i, t in enumerate(shared)]
        for kind, index, text in texts:
            cut_id = f"{speaker.id}_{kind}{index:03d}"
            spec = UtteranceSpec(text=text, speaker=speaker, seed=int(rng.integers(2**31)),
                                 rate=int(np.clip(speaker.rate * rng.uniform(0.9, 1.1), 80, 450)),
                                 pitch=int(np.clip(speaker.pitch + rng.integers(-6, 7), 0, 99)),
                                 pitch_range=int(np.clip(speaker.pitch_range + rng.integers(-8, 9), 0, 99)))
            path = audio / speaker.id / f"{cut_id}.flac"
            num_samples, phones = _render(spec, path)
            rec = recording(cut_id, path, num_samples)
            sup = SupervisionSegment(cut_id, cut_id, 0.0, rec.duration, text=text, speaker=speaker.id,
                                     custom={"phones": phones, "sentence": [kind, index]})
            cut = MonoCut(cut_id, 0.0, rec.duration, 0, recording=rec, supervisions=[sup])
            pool.append(cut)
            rendered[(speaker.id, kind, index)] = cut
    target = speakers[0].id
    train = [rendered[(target, "own", i)] for i in range(own_sentences)]
    sources = {"dev": range(0, shared_sentences // 2), "test": range(shared_sentences // 2, shared_sentences)}
    splits = {"train": train}
    for split, indices in sources.items():
        cuts = []
        for speaker in speakers[1:]:
            for i in indices:
                cut = rendered[(speaker.id, "shared", i)]
                reference = rendered[(target, "shared", i)].recording.sources[0].source
                sup = cut.supervisions[0]
                custom = {**sup.custom, "target_audio": reference, "target_speaker": target}
                sup = SupervisionSegment(sup.id, sup.recording_id, 0.0, sup.duration, text=sup.text,
                                         speaker=sup.speaker, custom=custom)
                cuts.append(MonoCut(cut.id, 0.0, cut.duration, 0, recording=cut.recording,
                                    supervisions=[sup]))
        splits[split] = cuts
    for split, cuts in splits.items():
        write_cutset(cuts, out / "vc" / f"{split}.jsonl.gz")
    for split, kind in (("train", "own"), ("dev", "shared")):
        write_cutset([c for c in pool if c.supervisions[0].custom["sentence"][0] == kind],
                     out / "vc_pool" / f"{split}.jsonl.gz")
    card = {"target_speaker": target, "speakers": [s.id for s in speakers],
            "voices": {s.id: s.voice for s in speakers}}
    atomic_write_json(out / "vc" / "card.json", card)


def main(argv: list[str] | None = None) -> None:
    """`python -m speechrep.apps.parallel OUT [--speakers N --own N --shared N --seed S]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m speechrep.apps.parallel",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--speakers", type=int, default=8)
    parser.add_argument("--own", type=int, default=120, help="own sentences per speaker")
    parser.add_argument("--shared", type=int, default=12, help="sentences every speaker says")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    corpus = make_parallel_corpus(args.out, args.speakers, args.own, args.shared, args.seed)
    for name, cuts in corpus.items():
        print(f"{args.out / name}.jsonl.gz: {len(cuts)} cuts, {sum(c.duration for c in cuts) / 60:.1f} min")


if __name__ == "__main__":
    main()
