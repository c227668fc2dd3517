"""Downstream heads, poolings, CTC vocabulary/decoding and STFT helpers: shapes, known values, padding."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speechrep.downstream.ctc import (
    Vocabulary,
    char_tokens,
    chars_to_text,
    ctc_loss,
    greedy_ctc_decode,
    phone_tokens,
    slot_char_tokens,
)
from speechrep.downstream.heads import (
    AMSoftmax,
    BiLSTMCTC,
    DiarizationLSTM,
    FrameLinear,
    MaskBiLSTM,
    MeanPoolLinear,
    XVector,
    istft,
    match_frames,
    pit_bce_loss,
    stft,
)
from speechrep.errors import ConfigError, SpeechrepError
from speechrep.nn.pooling import AttentiveStatisticsPooling, MeanPooling, StatisticsPooling, masked_mean

LENGTHS = torch.tensor([12, 7, 3])


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: one intra-op thread avoids thread spin-waits when the CPU cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _features(hidden: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 12, hidden, generator=torch.Generator().manual_seed(seed))


# ---- pooling -----------------------------------------------------------------------------------------------
def test_masked_mean_and_statistics_use_valid_frames_only():
    features = _features()
    pooled = MeanPooling()(features, LENGTHS)
    stats = StatisticsPooling(eps=0.0)(features, LENGTHS)
    for b, length in enumerate(LENGTHS.tolist()):
        valid = features[b, :length]
        torch.testing.assert_close(pooled[b], valid.mean(0))
        torch.testing.assert_close(stats[b], torch.cat([valid.mean(0), valid.std(0, unbiased=False)]))


def test_attentive_pooling_ignores_padding_and_uniform_attention_gives_plain_statistics():
    torch.manual_seed(0)
    pooling = AttentiveStatisticsPooling(6, attention_size=4, eps=0.0)
    features = _features()
    garbage = features.clone()
    garbage[1, 7:] = 1e3
    torch.testing.assert_close(pooling(features, LENGTHS), pooling(garbage, LENGTHS))
    torch.nn.init.zeros_(pooling.attention[2].weight)  # constant logits → equal weights
    torch.testing.assert_close(pooling(features, LENGTHS), StatisticsPooling(eps=0.0)(features, LENGTHS))


def test_pooling_rejects_empty_utterance():
    with pytest.raises(SpeechrepError, match="no frames"):
        masked_mean(_features(), torch.tensor([12, 0, 3]))


# ---- heads: shapes and padding -----------------------------------------------------------------------------
def _heads() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "mean_pool": MeanPoolLinear(6, 5, projection_size=8),
        "mean_pool_slots": MeanPoolLinear(6, [3, 4, 2], projection_size=None),
        "frame": FrameLinear(6, 7),
        "bilstm_ctc": BiLSTMCTC(6, 9, hidden_size=8),
        "xvector": XVector(6, embedding_size=10, channels=8, stats_channels=12),
        "xvector_attentive": XVector(6, embedding_size=10, channels=8, stats_channels=12, attentive=True),
        "diarization": DiarizationLSTM(6, num_speakers=3, hidden_size=8),
        "mask": MaskBiLSTM(
            6, num_sources=2, n_fft=64, hop_length=16, feature_stride=32, hidden_size=8, num_layers=2
        ),
    }


EXPECTED_SHAPES = {
    "mean_pool": (3, 5),
    "frame": (3, 12, 7),
    "bilstm_ctc": (3, 12, 9),
    "xvector": (3, 10),
    "xvector_attentive": (3, 10),
    "diarization": (3, 12, 3),
    "mask": (3, 2, 24, 33),
}


@pytest.mark.parametrize("name", sorted(_heads()))
def test_head_padded_batch_equals_one_by_one_and_backpropagates(name: str):
    head = _heads()[name].eval()
    features = _features().requires_grad_(True)
    batched = head(features, LENGTHS)
    outputs = batched if isinstance(batched, list) else [batched]
    if name in EXPECTED_SHAPES:
        assert tuple(outputs[0].shape) == EXPECTED_SHAPES[name]
    else:
        assert [tuple(o.shape) for o in outputs] == [(3, 3), (3, 4), (3, 2)]
    time_axis = {"frame": 1, "bilstm_ctc": 1, "diarization": 1, "mask": 2}.get(name)
    for b, length in enumerate(LENGTHS.tolist()):
        alone = head(features[b : b + 1, :length], LENGTHS[b : b + 1])
        for out, ref in zip(outputs, alone if isinstance(alone, list) else [alone]):
            got = out[b : b + 1]
            if time_axis is not None:
                got = got.narrow(time_axis, 0, ref.shape[time_axis])
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    sum(o.sum() for o in outputs).backward()
    assert torch.isfinite(features.grad).all()
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("bidirectional,num_layers", [(True, 2), (False, 1), (True, 3)])
def test_lstm_on_padded_batch_equals_packed_sequence_values_and_gradients(bidirectional: bool, num_layers: int):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from speechrep.downstream.heads import _run_lstm

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    features = _features().requires_grad_(True)
    ours = _run_lstm(lstm, features, LENGTHS)
    packed = pack_padded_sequence(features, LENGTHS, batch_first=True, enforce_sorted=False)
    reference, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=features.shape[1])
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)
    inputs = [features, *lstm.parameters()]
    ours_grads = torch.autograd.grad(ours.pow(2).sum(), inputs)
    reference_grads = torch.autograd.grad(reference.pow(2).sum(), inputs)
    for got, want in zip(ours_grads, reference_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_mean_pool_linear_rejects_bad_class_count():
    with pytest.raises(ConfigError, match="num_classes"):
        MeanPoolLinear(6, [3, 0])


# ---- AM-softmax --------------------------------------------------------------------------------------------
def test_am_softmax_equals_cross_entropy_on_cosines_without_margin():
    torch.manual_seed(0)
    loss_fn = AMSoftmax(10, 4, margin=0.0, scale=1.0)
    embeddings, labels = torch.randn(5, 10), torch.tensor([0, 3, 1, 1, 2])
    cosine = F.normalize(embeddings, dim=-1) @ F.normalize(loss_fn.weight, dim=-1).T
    torch.testing.assert_close(loss_fn(embeddings, labels), F.cross_entropy(cosine, labels))
    loss_fn.margin, loss_fn.scale = 0.3, 30.0
    margin = torch.zeros(5, 4)
    margin[torch.arange(5), labels] = 0.3
    torch.testing.assert_close(loss_fn(embeddings, labels), F.cross_entropy(30 * (cosine - margin), labels))


# ---- PIT-BCE -----------------------------------------------------------------------------------------------
def test_pit_bce_picks_the_permutation_and_ignores_padding():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(2, 10, 3, generator=generator) > 0.5).float()
    lengths = torch.tensor([10, 6])
    truth = torch.tensor([[2, 0, 1], [1, 2, 0]])  # output channel truth[b, j] predicts speaker j
    logits = torch.zeros_like(labels)
    for b in range(2):
        logits[b, :, truth[b]] = 4 * (2 * labels[b] - 1)
    logits[1, 6:] = 100.0  # padding: must not count
    loss, perm = pit_bce_loss(logits, labels, lengths)
    assert torch.equal(perm, truth)
    assert loss.item() == pytest.approx(F.softplus(torch.tensor(-4.0)).item(), rel=1e-5)


# ---- STFT helpers ------------------------------------------------------------------------------------------
def test_stft_istft_reconstructs_and_frames_match_a_160_stride_upstream():
    wavs = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    spectrum = stft(wavs)
    assert tuple(spectrum.shape) == (2, 101, 257)  # 16000 // 160 + 1 frames, 512 // 2 + 1 bins
    torch.testing.assert_close(istft(spectrum, 16000), wavs, atol=1e-5, rtol=0)


def test_mask_bilstm_upsamples_stride_320_features_to_stft_frames():
    torch.manual_seed(0)
    head = MaskBiLSTM(6, num_sources=2, feature_stride=320, hidden_size=8, num_layers=1)
    mixture = torch.randn(1, 16000)
    spectrum = stft(mixture)
    masks = head(torch.randn(1, 50, 6), torch.tensor([50]), num_frames=spectrum.shape[1])
    assert tuple(masks.shape) == (1, 2, 101, 257)
    torch.testing.assert_close(masks[:, :, 100], masks[:, :, 99])  # the extra STFT frame repeats the last
    assert ((masks > 0) & (masks < 1)).all()
    estimates = istft(masks[:, 0] * spectrum, 16000)
    assert tuple(estimates.shape) == (1, 16000)
    with pytest.raises(ConfigError, match="multiple"):
        MaskBiLSTM(6, feature_stride=320, hop_length=128)


def test_match_frames_trims_and_pads():
    frames = torch.arange(4.0).view(1, 4, 1)
    assert match_frames(frames, 2).flatten().tolist() == [0, 1]
    assert match_frames(frames, 6).flatten().tolist() == [0, 1, 2, 3, 3, 3]


# ---- CTC: vocabulary, decoding, training -------------------------------------------------------------------
def test_greedy_ctc_decode_collapses_repeats_and_drops_blanks_and_padding():
    best_path = torch.tensor([[0, 3, 3, 0, 3, 4, 4, 0], [2, 2, 0, 2, 1, 1, 4, 4]])
    logits = F.one_hot(best_path, 5).float() + 0.1 * torch.randn(2, 8, 5)
    assert greedy_ctc_decode(logits, torch.tensor([8, 5])) == [[3, 3, 4], [2, 2, 1]]


def test_vocabulary_build_encode_decode_and_json_roundtrip(tmp_path):
    vocab = Vocabulary.build([char_tokens("hi  you"), char_tokens("ho")])
    assert vocab.symbols == ["<blank>", "<unk>", "h", "i", "o", "u", "y", "|"]
    ids = vocab.encode(char_tokens("hi zoo"))
    assert ids == [2, 3, 7, 1, 4, 4]
    assert chars_to_text(vocab.decode(ids)) == "hi <unk>oo"
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert Vocabulary.load(path).symbols == vocab.symbols
    assert Vocabulary.build([phone_tokens("sil k ae t sil")]).symbols[2:] == ["ae", "k", "sil", "t"]
    path.write_text('["a", "b"]')
    with pytest.raises(ConfigError, match="vocab.json"):
        Vocabulary.load(path)


def test_slot_char_tokens_keep_tags_whole():
    tokens = slot_char_tokens("to  B-city new york E-city")
    assert tokens == ["t", "o", "|", "B-city", "|", "n", "e", "w", "|", "y", "o", "r", "k", "|", "E-city"]
    assert chars_to_text(tokens) == "to B-city new york E-city"
    assert "B-city" in Vocabulary.build([tokens]).symbols


def test_bilstm_ctc_learns_a_short_sequence_and_decodes_it():
    torch.manual_seed(0)
    vocab = Vocabulary.build([char_tokens("abc")])
    target = vocab.encode(char_tokens("abba"))
    features = torch.randn(1, 12, 6)
    head = BiLSTMCTC(6, len(vocab), hidden_size=16, num_layers=1)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    lengths = torch.tensor([12])
    for _ in range(30):
        optimizer.zero_grad()
        loss = ctc_loss(head(features, lengths), lengths, [target])
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    decoded = greedy_ctc_decode(head(features, lengths), lengths)[0]
    assert chars_to_text(vocab.decode(decoded)) == "abba"
