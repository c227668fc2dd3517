"""Discrete BERT pre-training (vq-wav2vec + BERT: Baevski et al. 2020, https://arxiv.org/abs/1910.05453;
Baevski, Auli and Mohamed 2019, https://arxiv.org/abs/1911.03912): masked prediction of vq-wav2vec tokens.

Two stages, like HuBERT's k-means targets:

    speechrep pretrain --method vq_wav2vec --data CORPUS --out VQ                      # the tokenizer
    speechrep pretrain --method discrete_bert --data CORPUS --out BERT tokenizer=VQ/upstream

`tokenizer` is an exported vq-wav2vec (`VQ/upstream`; a fairseq vq-wav2vec `.pt` loads too). The method
first fits the vocabulary: every code combination the frozen tokenizer produces on the training windows (all
of them, or the first `vocab_seconds` seconds in manifest order) gets a token, in the order of its combined
index, so the vocabulary depends only on the data and the tokenizer (fairseq built its dictionary of "g0-g1"
tokens from the training set the same way; it ordered it by frequency). Every DDP rank fits the same
vocabulary from the whole split; it is written to RUN/vocabulary.json (combinations and their counts) and a
resumed run reads it back. The upstream (`speechrep.upstream.discrete_bert`) carries the tokenizer and the
vocabulary into its export. Tokens are computed on the fly at every step (the tokenizer's encoder and
quantizer only; its context network is not run); fairseq tokenized the corpus once beforehand. The tokenizer's
group norm takes its statistics over the window it reads, so a window cut out of a long utterance
(`data.max_utterance`) can get a few tokens other than the whole utterance would.

Objective (the vq-wav2vec paper's BERT): p = 5 % of the tokens of each utterance start a masked span of
M = 10 tokens (starts drawn without replacement, spans may overlap: about 40 % of the tokens are masked; at
least one span per utterance so that every batch has targets); masked input tokens are replaced by <mask>
(fairseq's masked-LM task can also leave 10 % unchanged and replace 10 % by random tokens; not done here).
A RoBERTa LM head (dense → GELU → layer norm → the token embeddings, tied, plus a bias) scores every token
at the masked positions; the loss is the mean cross-entropy over masked tokens only. Logged: `masked_acc`
(argmax = the original token), `mask_share`, `unk_share` (tokens outside the vocabulary, on dev: combinations
never seen in training). The "Effectiveness" paper's later variant draws span lengths from N(10, 10); the
fixed span of the vq-wav2vec paper is used here.

Training (the vq-wav2vec paper, BERT base): 250k updates, learning rate warmed up over 10k updates to 1e-5,
then linearly decayed; 128 GPUs × 3072 tokens (30.72 s of audio) per batch; Adam with fairseq's RoBERTa
betas (0.9, 0.98) and weight decay 0.01, no clipping.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lhotse import CutSet
from torch import Tensor, nn
from tqdm import tqdm

from speechrep.data.batching import AudioBatch, EpochBatches, cut_sampler
from speechrep.data.shar import SharSplit
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.nn.masking import compute_span_mask
from speechrep.pretrain.common import PretrainData, load_unlabeled, run_pretraining
from speechrep.ranks import resolve_device
from speechrep.storage import atomic_write_json
from speechrep.train import TrainConfig, is_main_process
from speechrep.upstream.base import padding_mask
from speechrep.upstream.discrete_bert import MASK, UNK, DiscreteBERT, combine_codes, vq_codes
from speechrep.upstream.loading import load_upstream
from speechrep.upstream.wav2vec import Wav2Vec

log = logging.getLogger(__name__)

VOCABULARY_FILE = "vocabulary.json"
MAX_COUNTED_COMBINATIONS = 1 << 26  # V^G combinations are counted in one dense table


@dataclass
class Config:
    """Discrete BERT base on vq-wav2vec tokens (the vq-wav2vec paper's BERT settings)."""

    upstream: str = "discrete_bert"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the hub config, e.g. {num_layers: 4}
    tokenizer: str = ""  # exported vq-wav2vec upstream (`speechrep pretrain --method vq_wav2vec`): required
    mask_start_prob: float = 0.05  # share of tokens that start a masked span (the paper's p)
    mask_span: int = 10  # tokens per span (the paper's M)
    vocab_seconds: float | None = None  # training audio tokenized to fit the vocabulary; None: all of it
    data: PretrainData = field(
        default_factory=lambda: PretrainData(max_duration=30.72, max_utterance=30.72, min_utterance=1.0)
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_steps=250_000, lr=1e-5, warmup_steps=10_000,
                                            schedule="linear", betas=(0.9, 0.98), weight_decay=0.01,
                                            clip_norm=None, eval_every=5000, log_every=200)
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_start_prob <= 1.0:
            raise ConfigError(f"key 'mask_start_prob': must be in (0, 1], got {self.mask_start_prob}")
        if self.mask_span < 1:
            raise ConfigError(f"key 'mask_span': must be >= 1, got {self.mask_span}")
        if self.vocab_seconds is not None and not self.vocab_seconds > 0:
            raise ConfigError(f"key 'vocab_seconds': must be > 0 or null, got {self.vocab_seconds}")
        for key in ("tokenizer", "vocab_size"):
            if key in self.model:
                raise ConfigError(f"key 'model.{key}': set by the method (from the tokenizer and the data)")


def load_tokenizer(path: str) -> Wav2Vec:
    """The vq-wav2vec at `path` (an export or a fairseq `.pt`); anything else: one-line ConfigError."""
    how = "train one with `speechrep pretrain --method vq_wav2vec --data CORPUS --out RUN`, then pass " \
          "tokenizer=RUN/upstream"
    if not path:
        raise ConfigError(f"key 'tokenizer': discrete_bert needs a vq-wav2vec tokenizer; {how}")
    if not Path(path).exists():
        raise ConfigError(f"key 'tokenizer': {path}: no such file or directory (expected an exported "
                          "vq-wav2vec upstream, RUN/upstream)")
    try:
        model = load_upstream(Path(path))
    except SpeechrepError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"key 'tokenizer': {path} is not a loadable upstream ({reason})") from None
    if not isinstance(model, Wav2Vec) or model.config.vq_type == "none":
        family = getattr(model, "family", type(model).__name__)
        kind = "a wav2vec without a quantizer" if isinstance(model, Wav2Vec) else f"a {family} upstream"
        raise ConfigError(f"key 'tokenizer': {path} is {kind}, not a vq-wav2vec; {how}")
    return model.eval()


def fit_vocabulary(tokenizer: Wav2Vec, cuts: CutSet | SharSplit, max_duration: float,
                   max_seconds: float | None = None) -> tuple[Tensor, Tensor]:
    """(combinations, counts): the code combinations `tokenizer` produces on `cuts` (strictly increasing),
    and how often. Every cut in manifest order, whatever this process's rank; the global RNG is untouched."""
    c = tokenizer.config
    total = c.vq_vars ** c.vq_groups
    if total > MAX_COUNTED_COMBINATIONS:
        raise ConfigError(f"discrete_bert: {total} code combinations (V^G) are too many to count")
    device = next(tokenizer.parameters()).device
    counts = torch.zeros(total, dtype=torch.long)
    if isinstance(cuts, SharSplit):
        cuts = cuts.cuts()
    seconds = 0.0
    bar = tqdm(desc="discrete_bert vocabulary", unit="s", disable=not sys.stderr.isatty())
    with torch.random.fork_rng(devices=[]):  # the loader draws a seed: keep the run's initial weights
        for batch in EpochBatches(cut_sampler(cuts, max_duration, shuffle=False)):
            codes, lengths = vq_codes(tokenizer, batch.wavs.to(device), batch.wav_lens.to(device))
            combined = combine_codes(codes, c.vq_vars)[padding_mask(lengths, codes.shape[1])]
            counts += torch.bincount(combined.cpu(), minlength=total)
            done = float(batch.wav_lens.sum()) / tokenizer.sample_rate
            seconds += done
            bar.update(done)
            if max_seconds is not None and seconds >= max_seconds:
                break
    bar.close()
    combinations = counts.nonzero().flatten()
    return combinations, counts[combinations]


def vocabulary(cfg: Config, tokenizer: Wav2Vec, data: Path, run_dir: Path) -> Tensor:
    """The run's vocabulary: RUN/vocabulary.json when a previous start wrote it, else fitted and written."""
    path = run_dir / VOCABULARY_FILE
    if path.is_file():
        return torch.tensor(json.loads(path.read_text())["combinations"], dtype=torch.long)
    train_cuts, _ = load_unlabeled(data, cfg.data)
    tokenizer.to(resolve_device(cfg.train.device))
    combinations, counts = fit_vocabulary(tokenizer, train_cuts, cfg.data.max_duration, cfg.vocab_seconds)
    tokenizer.cpu()
    c = tokenizer.config
    frames = int(counts.sum())
    log.info("discrete_bert: %d of %d code combinations in %d training frames get tokens", len(combinations),
             c.vq_vars ** c.vq_groups, frames)
    if len(combinations) == 0:
        raise SpeechrepError(f"{data}: no training frame to fit the discrete_bert vocabulary on")
    if is_main_process():
        atomic_write_json(path, {"tokenizer": cfg.tokenizer, "groups": c.vq_groups, "entries": c.vq_vars,
                                 "frames": frames, "combinations": combinations.tolist(),
                                 "counts": counts.tolist()})
    return combinations


class MaskedTokenHead(nn.Module):
    """RoBERTa's LM head: dense → GELU → layer norm, scored against the (tied) token embeddings + a bias."""

    def __init__(self, hidden_size: int, num_tokens: int, eps: float = 1e-5):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(num_tokens))

    def forward(self, hidden: Tensor, embeddings: Tensor) -> Tensor:
        """(N, H) hidden states, (num_tokens, H) token embeddings → (N, num_tokens) logits."""
        return F.linear(self.norm(F.gelu(self.dense(hidden))), embeddings, self.bias)


class DiscreteBERTObjective(nn.Module):
    """A Discrete BERT upstream plus its LM head (pre-training only); forward: the masked-token loss."""

    def __init__(self, upstream: DiscreteBERT, mask_start_prob: float = 0.05, mask_span: int = 10):
        super().__init__()
        self.upstream, self.mask_start_prob, self.mask_span = upstream, mask_start_prob, mask_span
        c = upstream.config
        self.head = MaskedTokenHead(c.hidden_size, upstream.num_tokens, c.layer_norm_eps)

    def masked_loss(self, tokens: Tensor, lengths: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(loss, accuracy) of predicting `tokens` (B, T) at the True positions of `mask` (B, T) from the
        input with those positions replaced by <mask>: mean cross-entropy over the masked tokens."""
        _, final = self.upstream.encode(tokens.masked_fill(mask, MASK), lengths)
        logits = self.head(final[mask], self.upstream.embed_tokens.weight).float()
        gold = tokens[mask]
        return F.cross_entropy(logits, gold), (logits.argmax(-1) == gold).float().mean()

    def forward(self, batch: AudioBatch) -> tuple[Tensor, dict[str, float]]:
        """Masked-token loss and scalars (masked accuracy, masked share, <unk> share) for a batch."""
        tokens, lengths = self.upstream.tokenize(batch.wavs, batch.wav_lens)
        mask = compute_span_mask(lengths, tokens.shape[1], self.mask_start_prob * self.mask_span,
                                 self.mask_span, min_spans=1)
        loss, accuracy = self.masked_loss(tokens, lengths, mask)
        valid = padding_mask(lengths, tokens.shape[1])
        return loss, {"masked_acc": float(accuracy), "mask_share": float(mask[valid].float().mean()),
                      "unk_share": float((tokens[valid] == UNK).float().mean())}


def run(cfg: Config, data: Path, run_dir: Path) -> Path:
    """Pre-train Discrete BERT on `data` over the tokens of `cfg.tokenizer`; returns the exported upstream."""
    tokenizer = load_tokenizer(cfg.tokenizer)
    combinations = vocabulary(cfg, tokenizer, data, run_dir)
    try:
        upstream = load_upstream(cfg.upstream, tokenizer=tokenizer.config, vocab_size=len(combinations),
                                 **cfg.model)
    except TypeError as error:  # a constructor without these fields: not a Discrete BERT architecture
        raise ConfigError(f"key 'upstream': {cfg.upstream} is not a discrete_bert architecture") from error
    if not isinstance(upstream, DiscreteBERT):
        raise ConfigError(f"key 'upstream': {cfg.upstream} is not a discrete_bert architecture")
    upstream.tokenizer.load_state_dict(tokenizer.state_dict())
    upstream.set_vocabulary(combinations)
    objective = DiscreteBERTObjective(upstream, cfg.mask_start_prob, cfg.mask_span)
    return run_pretraining("discrete_bert", objective, upstream, cfg, data, run_dir)
