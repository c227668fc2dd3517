"""mini-SUPERB: a synthetic multi-task speech corpus spoken by eSpeak NG, built with no download.

`make_synthetic_corpus(output_dir, preset="tiny", seed=0, subsets=None, num_workers=2)` (or
`speechrep synth --preset {tiny,small,full} --out DIR [--seed N] [--subsets ks,sid]`) writes:

    DIR/<subset>/{train,dev,test}.jsonl.gz   lhotse CutSets (gzipped JSONL, one MonoCut per line)
    DIR/<subset>/audio/*.flac                16 kHz mono FLAC; manifests hold absolute paths
    DIR/<subset>/card.json, card.md          counts, hours, speakers, label inventory, sanity baseline
    DIR/<subset>/.complete                   written last; a re-run skips subsets that have it

Subsets (speaker-disjoint splits for all but `sid`) and where their labels live (`sup` = the cut's
supervision; `custom` = `sup.custom`):

- `unlabeled`, `pr`, `asr`: sentences with natural word frequencies. `sup.text`, `sup.speaker`,
  `custom["phones"]` (symbols of `PHONES`), `custom["phone_alignment"]` ([phone, start_s, end_s]),
  `custom["word_alignment"]` ([word(s), start_s, end_s]; eSpeak merges some function words into one entry).
  Every single-utterance subset below carries these alignments too.
- `ks`: 1 s clips; `custom["keyword"]` in yes/no/up/down/left/right/on/off/stop/go, `_unknown_`, `_silence_`.
- `qbe`: `{split}_queries.jsonl.gz` (single spoken words, `custom["term"]`), `{split}.jsonl.gz` documents
  (`custom["contains"]`: query terms spoken in it) and `{split}_truth.txt` lines `query_id doc_id 1|0`.
- `sid`: the same speakers in every split, different sentences; label `sup.speaker`.
- `asv`: `{split}_trials.txt` lines `1|0 enroll_cut_id test_cut_id` (1 = same speaker): every same-speaker
  pair of the split and the different-speaker pairs (a sample of ten per target pair where there are more).
- `sd`: two-speaker conversations with pauses and overlaps; one supervision per turn (start, duration,
  speaker) and `{split}.rttm`.
- `er`: `custom["emotion"]` in neutral/happy/angry/sad (rate, pitch, range, loudness, spectral tilt) and
  `custom["fold"]` (speaker group 1..5: train = folds 1-3, dev = 4, test = 5).
- `ic`: `custom["intent"]` = {"action", "object", "location"}, several phrasings per intent.
- `sf`: `custom["intent"]`, `custom["slots"]` ([{"type", "value"}]), `custom["tags"]` (BIO per word),
  `custom["tagged_text"]`.
- `se`: the noisy recording, `cut.clean` (lhotse Recording; `cut.load_clean()`), `custom["snr"]`.
- `ss`: the mixture, `cut.source1`/`cut.source2` (`cut.load_source1()`), one supervision per source; the
  mixture's samples are exactly the sum of the two sources' samples.

Built only when named (`--subsets`; `OPT_IN_SUBSETS`), the prosody-intensive subsets, where every sentence is
spoken once in each class by one speaker, so the transcript (`sup.text`) is at chance
(`speechrep.data.synth.prosodic`; splits speaker- and sentence-disjoint):

- `sentence_type`: `custom["sentence_type"]` in statement/question/exclamation (eSpeak's clause tunes).
- `emphasis`: `custom["emphasis"]` = 1, 2 or 3, the emphasised word of a four-word sentence (SSML emphasis).
- `irony`: `custom["irony"]` in sincere/ironic (slower, wider pitch range, drawn-out adjective).

Also opt-in, `ood_asr` (SUPERB-SG OOD-ASR; `subsets.plan_ood_asr`): one ASR corpus per domain in
`ood_asr/<domain>/{train,dev,test}.jsonl.gz` (the subset's own manifests hold every domain,
`cut.custom["domain"]`), sizes per domain like `asr`'s, speaker-disjoint splits. `es`, `de`, `fr`: eSpeak
voices of the language read 4-14 words drawn with its wordfreq frequencies (`sup.text` lower case,
`sup.language` the language, no phone labels); `spontaneous`: English sentences with fillers, a repeated
word and hesitation pauses, `sup.text` verbatim (fillers included) with phones and alignments.

Also opt-in, `st` (SUPERB-SG speech translation; `subsets.plan_st`): English sentences of a small grammar
(`translation.py`) spoken by English voices, `sup.text` English, `custom["translation"]` the sentence in
Zelan, an invented language (rule-based: lexicon, article/adjective/verb agreement, adjectives after nouns,
verb-final clauses after `that`), `custom["target_language"]` = `zl`; sizes like `asr`'s, speaker-disjoint
splits.

Out-of-domain test splits (`domains=` / `speechrep synth --domains unseen,accented,fast,slow,spontaneous`;
`speechrep.data.synth.domains`): `<subset>/test_<domain>.jsonl.gz` of ks, ic, er, pr, asr and sid (sid: all
but `unseen`), each the subset's test split item by item with one change (new voices, a foreign eSpeak voice
reading the English text, 2x or 0.5x the rate, fillers and hesitations), same labels; adding them changes no
other file (docs/robustness.md).

Speakers are fixed combinations of eSpeak accent, voice variant, pitch, pitch range, rate and a random EQ;
utterances jitter rate and pitch, a fraction get reverberation and background noise at a random SNR.
The same preset and seed give byte-identical manifests.
"""

from speechrep.data.synth.corpus import OPT_IN_SUBSETS, PRESETS, SUBSETS, load_subset, make_synthetic_corpus
from speechrep.data.synth.phones import PHONES, map_espeak_phoneme, map_espeak_phonemes

__all__ = [
    "OPT_IN_SUBSETS",
    "PHONES",
    "PRESETS",
    "SUBSETS",
    "load_subset",
    "make_synthetic_corpus",
    "map_espeak_phoneme",
    "map_espeak_phonemes",
]
