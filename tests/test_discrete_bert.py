"""Discrete BERT (vq-wav2vec + BERT): token ids from code combinations, the masked-token loss against a hand
computation, the two-stage pipeline on the micro corpus (a tiny k-means vq-wav2vec, then Discrete BERT over
its tokens) with export, re-load and resume, and the one-line errors of a bad tokenizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pretrain_corpus import first_batch, unlabeled_corpus

from speechrep.data.batching import load_cuts
from speechrep.errors import ConfigError
from speechrep.pretrain import run_method
from speechrep.pretrain.discrete_bert import DiscreteBERTObjective, fit_vocabulary
from speechrep.train import read_metrics
from speechrep.upstream import export_upstream, load_upstream
from speechrep.upstream.discrete_bert import MASK, UNK, DiscreteBERT, combine_codes, vq_codes
from speechrep.upstream.wav2vec import Wav2Vec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def tokenizer_export(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stage 1: a tiny k-means vq-wav2vec trained for a few steps and exported."""
    run = tmp_path_factory.mktemp("vq") / "run"
    return run_method("vq_wav2vec", corpus, run, "tiny", ["upstream=vq_wav2vec_kmeans_tiny",
                                                          "quantizer_weight=1.0", "train.max_steps=20",
                                                          "train.eval_every=20", "train.log_every=10"])


def test_code_combinations_are_one_to_one() -> None:
    codes = torch.cartesian_prod(torch.arange(16), torch.arange(16))  # every (g0, g1) of V = 16
    assert combine_codes(codes, 16).tolist() == list(range(256))  # g0·V + g1
    three = torch.cartesian_prod(torch.arange(5), torch.arange(5), torch.arange(5))
    assert combine_codes(three, 5).tolist() == list(range(125))
    model = load_upstream("discrete_bert_tiny", vocab_size=4)
    model.set_vocabulary(torch.tensor([3, 17, 40, 200]))
    # each known combination has its own id (2 + its rank), every other one is <unk>
    assert model.token_ids(torch.tensor([17, 3, 200, 5, 40, 255])).tolist() == [3, 2, 5, UNK, 4, UNK]
    assert model.num_tokens == 6 and model.embed_tokens.num_embeddings == 6
    with pytest.raises(ConfigError, match="strictly increasing"):
        model.set_vocabulary(torch.tensor([3, 3, 40, 200]))
    plain = load_upstream("discrete_bert_tiny")  # vocab_size 0: every combination, token 2 + g0·V + g1
    assert plain.token_ids(torch.arange(256)).tolist() == list(range(2, 258))


def test_fitted_vocabulary_is_deterministic_and_covers_the_training_audio(corpus: Path) -> None:
    torch.manual_seed(0)
    tokenizer = load_upstream("vq_wav2vec_kmeans_tiny").eval()
    cuts = load_cuts(corpus, "unlabeled", "train")
    rng = torch.get_rng_state()
    combinations, counts = fit_vocabulary(tokenizer, cuts, max_duration=6.0)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's initial weights do not depend on the fit
    again, counts_again = fit_vocabulary(tokenizer, cuts, max_duration=11.0)  # other batches, same result
    assert torch.equal(combinations, again) and torch.equal(counts, counts_again)
    assert bool((combinations[1:] > combinations[:-1]).all()) and bool((counts > 0).all())
    assert int(counts.sum()) == sum(tokenizer.frame_geometry.num_frames(c.num_samples) for c in cuts)

    model = load_upstream("discrete_bert_tiny", tokenizer=tokenizer.config, vocab_size=len(combinations))
    model.tokenizer.load_state_dict(tokenizer.state_dict())
    model.set_vocabulary(combinations)
    batch = first_batch(corpus)
    model.train()  # the tokenizer stays in eval mode: the same tokens in training and extraction
    tokens, lengths = model.tokenize(batch.wavs, batch.wav_lens)
    assert not model.tokenizer.training
    assert torch.equal(model.eval().tokenize(batch.wavs, batch.wav_lens)[0], tokens)
    codes, _ = vq_codes(tokenizer, batch.wavs, batch.wav_lens)
    for i, n in enumerate(lengths.tolist()):
        ids = tokens[i, :n]
        assert UNK not in ids.tolist()  # every training combination has a token ...
        # ... and the token gives the combination back: one id per combination
        assert torch.equal(combinations[ids - 2], combine_codes(codes[i, :n], 16))
        alone, _ = model.tokenize(batch.wavs[i:i + 1, :int(batch.wav_lens[i])], batch.wav_lens[i:i + 1])
        assert torch.equal(alone[0], ids)  # padding changes no token


def _objective(vocab_size: int = 5) -> DiscreteBERTObjective:
    torch.manual_seed(0)
    model = load_upstream("discrete_bert_tiny", vocab_size=vocab_size)
    return DiscreteBERTObjective(model).eval()


def test_masked_token_loss_matches_a_hand_computation() -> None:
    objective = _objective()
    up, head = objective.upstream, objective.head
    tokens = torch.tensor([[2, 3, 3, 4, 5, 6, 2, 2, 3, 4, 6, 5],
                           [6, 6, 5, 4, 3, 2, 2, 3, 0, 0, 0, 0]])
    lengths = torch.tensor([12, 8])
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, 2:5] = mask[0, 9] = mask[1, 1:4] = True
    with torch.no_grad():
        loss, accuracy = objective.masked_loss(tokens, lengths, mask)
        # by hand: <mask> in, each masked position scored against every token embedding
        inputs = tokens.clone()
        inputs[mask] = MASK
        _, final = up.encode(inputs, lengths)
        terms, hits = [], []
        for b, t in mask.nonzero().tolist():
            h = head.norm(F.gelu(head.dense(final[b, t])))
            logits = up.embed_tokens.weight @ h + head.bias
            terms.append(torch.logsumexp(logits, 0) - logits[tokens[b, t]])
            hits.append(float(int(logits.argmax()) == int(tokens[b, t])))
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    assert accuracy.item() == pytest.approx(sum(hits) / len(hits))

    # a head that ignores the encoder scores every position by its bias alone: p = softmax(bias)
    with torch.no_grad():
        head.norm.weight.zero_()
        head.norm.bias.zero_()
        head.bias.copy_(torch.log(torch.tensor([0.05, 0.05, 0.4, 0.2, 0.1, 0.1, 0.1])))
        loss, accuracy = objective.masked_loss(tokens, lengths, mask)
        # masked targets: 3, 4, 5 | 4 | 6, 5, 4 → −log p, averaged over the 7 masked tokens only
        by_hand = -(math.log(0.2) + 3 * math.log(0.1) + 3 * math.log(0.1)) / 7
        assert loss.item() == pytest.approx(by_hand, rel=1e-5)
        assert accuracy.item() == 0.0  # the argmax is token 2, never a target here
        other = tokens.clone()
        other[~mask] = 6  # unmasked tokens are no targets
        assert objective.masked_loss(other, lengths, mask)[0].item() == pytest.approx(by_hand, rel=1e-5)


def test_two_stage_training_exports_and_loads(corpus: Path, tokenizer_export: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    args = [f"tokenizer={tokenizer_export}", "train.max_steps=40", "train.log_every=10",
            "train.eval_every=40"]
    export = run_method("discrete_bert", corpus, tmp_path / "run", "tiny", args)
    logs = read_metrics(tmp_path / "run", "train")
    losses = [m["loss"] for m in logs]
    assert losses[-1] < losses[0] - 0.3, losses
    assert all(0.25 < m["mask_share"] < 0.6 and m["unk_share"] == 0.0 for m in logs)  # p = 5 %, M = 10: ~40 %
    assert 0.0 <= logs[-1]["masked_acc"] <= 1.0

    model = load_upstream(export).eval()
    assert isinstance(model, DiscreteBERT) and model.provenance["method"] == "discrete_bert"
    vocabulary = json.loads((tmp_path / "run" / "vocabulary.json").read_text())
    assert model.vocabulary.tolist() == vocabulary["combinations"] and model.config.vocab_size > 1
    tokenizer = load_upstream(tokenizer_export)
    assert isinstance(tokenizer, Wav2Vec) and model.config.tokenizer == tokenizer.config
    for key, value in tokenizer.state_dict().items():  # frozen: the tokenizer is the stage-1 export
        assert torch.equal(model.tokenizer.state_dict()[key], value), key
    assert not any(p.requires_grad for p in model.tokenizer.parameters())

    wavs, lens = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6400])
    wavs[1, 6400:] = 0.8  # padding garbage must not leak
    out = model(wavs, lens)
    assert [h.shape for h in out.hidden_states] == [(2, 48, 64)] * 3
    assert model.hidden_sizes == [64] * 3
    assert out.lengths.tolist() == [48, 38] == model.output_lengths(lens).tolist()
    for i, n in enumerate(lens.tolist()):
        alone = model(wavs[i:i + 1, :n], lens[i:i + 1])
        for a, b in zip(out.hidden_states, alone.hidden_states):
            torch.testing.assert_close(a[i:i + 1, : b.shape[1]], b, atol=1e-5, rtol=1e-5)

    # the same command again: the finished run is resumed, its vocabulary read back, the export unchanged
    def no_refit(*args: object, **kwargs: object) -> None:
        raise AssertionError("a resumed run refitted its vocabulary")

    monkeypatch.setattr("speechrep.pretrain.discrete_bert.fit_vocabulary", no_refit)
    assert run_method("discrete_bert", corpus, tmp_path / "run", "tiny", args) == export
    again = load_upstream(export).eval()
    torch.testing.assert_close(again(wavs, lens).hidden_states[-1], out.hidden_states[-1])


def test_bad_tokenizer_is_a_one_line_config_error(corpus: Path, tmp_path: Path) -> None:
    plain = export_upstream(load_upstream("wav2vec_tiny"), tmp_path / "plain", {"name": "wav2vec_tiny"})
    hubert = export_upstream(load_upstream("hubert_tiny"), tmp_path / "hubert", {"name": "hubert_tiny"})
    (tmp_path / "empty").mkdir()
    cases = [("", "needs a vq-wav2vec tokenizer"), (str(tmp_path / "nowhere"), "no such file or directory"),
             (str(tmp_path / "empty"), "is not a loadable upstream"),
             (str(plain), "a wav2vec without a quantizer, not a vq-wav2vec"),
             (str(hubert), "a hubert upstream, not a vq-wav2vec")]
    for i, (path, message) in enumerate(cases):
        with pytest.raises(ConfigError, match=r"^key 'tokenizer': ") as info:
            run_method("discrete_bert", corpus, tmp_path / f"run{i}", "tiny", [f"tokenizer={path}"])
        assert message in str(info.value) and "\n" not in str(info.value)


class _Killed(Exception):
    """Stands in for a killed job."""


def test_killed_run_resumes_to_the_uninterrupted_losses(corpus: Path, tokenizer_export: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    args = [f"tokenizer={tokenizer_export}", "train.max_steps=8", "train.log_every=1", "train.eval_every=4"]
    full = run_method("discrete_bert", corpus, tmp_path / "full", "tiny", args)
    import speechrep.pretrain.common as common

    real_train = common.train

    def killed_after_step_6(*a: object, **kw: object) -> object:
        def after_step(model: torch.nn.Module, step: int) -> None:
            if step == 6:  # the last checkpoint is step 4's
                raise _Killed

        return real_train(*a, **{**kw, "after_step": after_step})

    monkeypatch.setattr(common, "train", killed_after_step_6)
    with pytest.raises(_Killed):
        run_method("discrete_bert", corpus, tmp_path / "resumed", "tiny", args)
    monkeypatch.setattr(common, "train", real_train)
    resumed = run_method("discrete_bert", corpus, tmp_path / "resumed", "tiny", args)
    losses = {m["step"]: m["loss"] for m in read_metrics(tmp_path / "full", "train")}
    again = {m["step"]: m["loss"] for m in read_metrics(tmp_path / "resumed", "train")}
    assert again == losses  # steps 5 and 6 logged twice: the second time with the same values
    a, b = load_upstream(full).state_dict(), load_upstream(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
