"""Downstream metrics on hand-made cases with known values, and QbE subsequence DTW."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from speechrep.downstream.dtw import normalize_query_scores, qbe_scores, subsequence_dtw_end_costs
from speechrep.downstream.metrics import (
    Segment,
    accuracy,
    combine_der,
    all_slots_accuracy,
    char_error_rate,
    der_from_segments,
    diarization_error_rate,
    equal_error_rate,
    error_rate,
    maximum_term_weighted_value,
    mean_average_precision,
    min_dcf,
    parse_slots,
    pesq_wb,
    pit_assign,
    pit_loss,
    read_rttm,
    reorder_sources,
    si_sdr,
    si_sdr_improvement,
    slot_type_f1,
    slot_value_cer,
    stoi,
    word_error_rate,
)
from speechrep.errors import AudioError, SpeechrepError


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: one intra-op thread avoids thread spin-waits when the CPU cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---- error rates -------------------------------------------------------------------------------------------
def test_error_rate_counts_substitutions_deletions_insertions_over_reference_tokens():
    # utt 1: b→x substituted, d deleted; utt 2: sil and t inserted; 6 reference tokens in all
    hyps = [["a", "x", "c"], ["sil", "k", "ae", "t"]]
    refs = [["a", "b", "c", "d"], ["k", "ae"]]
    assert error_rate(hyps, refs) == pytest.approx(4 / 6)
    assert error_rate(refs, refs) == 0.0


def test_error_rate_with_empty_reference_counts_insertions():
    assert error_rate([["a", "b"], ["c"]], [["a", "b"], []]) == pytest.approx(1 / 2)
    assert error_rate([[], ["x"]], [["a"], ["x"]]) == pytest.approx(1 / 2)  # empty hypothesis: one deletion


def test_word_and_char_error_rates():
    assert word_error_rate(["the cat sat"], ["the cat sat on"]) == pytest.approx(1 / 4)
    assert word_error_rate(["a b", "c"], ["a b", "d e"]) == pytest.approx(2 / 4)
    # "ab c" vs "ab d": 4 characters (space included), one substitution
    assert char_error_rate(["ab c"], ["ab  d"]) == pytest.approx(1 / 4)


def test_error_rate_rejects_unpaired_input():
    with pytest.raises(SpeechrepError, match="pair up"):
        error_rate([["a"]], [["a"], ["b"]])
    with pytest.raises(SpeechrepError, match="empty"):
        error_rate([[]], [[]])


# ---- accuracy ----------------------------------------------------------------------------------------------
def test_accuracy_and_mask():
    predictions = torch.tensor([[1, 2, 3], [1, 0, 0]])
    targets = torch.tensor([[1, 2, 0], [1, 1, 0]])
    assert accuracy(predictions, targets) == pytest.approx(4 / 6)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert accuracy(predictions, targets, mask) == 1.0
    assert all_slots_accuracy(predictions, targets) == 0.0
    assert all_slots_accuracy(predictions, torch.tensor([[1, 2, 3], [0, 0, 0]])) == 0.5


# ---- EER / minDCF ------------------------------------------------------------------------------------------
def _trials(targets, nontargets):
    return np.array(targets + nontargets, dtype=float), np.array([1] * len(targets) + [0] * len(nontargets))


def test_eer_perfectly_separated_is_zero():
    scores, labels = _trials([0.6, 0.7, 0.9], [0.1, 0.2, 0.5])
    assert equal_error_rate(scores, labels) == 0.0
    assert min_dcf(scores, labels) == 0.0


def test_eer_constructed_crossing():
    # threshold 0.5 misses one target (0.1) and accepts one non-target (0.9): both rates 1/4
    scores, labels = _trials([0.1, 0.6, 0.7, 0.8], [0.2, 0.3, 0.4, 0.9])
    assert equal_error_rate(scores, labels) == pytest.approx(0.25)
    # the top score is a non-target, so at p_target 0.01 nothing beats rejecting everything
    assert min_dcf(scores, labels) == pytest.approx(1.0)


def test_eer_fully_inverted_is_one():
    scores, labels = _trials([0.1, 0.2], [0.8, 0.9])
    assert equal_error_rate(scores, labels) == pytest.approx(1.0)


def test_min_dcf_hand_made():
    scores, labels = _trials([0.9, 0.8, 0.3], [0.5, 0.1, 0.2, 0.0])
    # p_target 0.01: cost/0.01 = P_miss + 99 P_fa; accepting {0.9, 0.8} gives 1/3 + 0
    assert min_dcf(scores, labels) == pytest.approx(1 / 3)
    # p_target 0.5: cost/0.5 = P_miss + P_fa; accepting down to 0.3 gives 0 + 1/4
    assert min_dcf(scores, labels, p_target=0.5) == pytest.approx(1 / 4)


def test_eer_and_min_dcf_of_gaussian_scores_match_theory():
    quantiles = (np.arange(20000) + 0.5) / 20000
    d_prime = 2.0
    targets, nontargets = norm.ppf(quantiles) + d_prime, norm.ppf(quantiles)
    scores, labels = _trials(list(targets), list(nontargets))
    assert equal_error_rate(scores, labels) == pytest.approx(norm.cdf(-d_prime / 2), abs=1e-3)
    thresholds = np.linspace(-2, 8, 20001)
    expected = (0.01 * norm.cdf(thresholds - d_prime) + 0.99 * norm.sf(thresholds)).min() / 0.01
    assert min_dcf(scores, labels) == pytest.approx(expected, abs=5e-3)


def test_verification_rejects_bad_input():
    with pytest.raises(SpeechrepError, match="both"):
        equal_error_rate([0.1, 0.2], [1, 1])
    with pytest.raises(SpeechrepError, match="NaN"):
        min_dcf([0.1, float("nan")], [1, 0])


# ---- DER ---------------------------------------------------------------------------------------------------
def test_der_zero_for_relabelled_speakers():
    reference = [Segment("A", 0, 10), Segment("B", 10, 20)]
    hypothesis = [Segment("spk1", 0, 10), Segment("spk0", 10, 20)]
    assert der_from_segments(reference, hypothesis).der == 0.0


def test_der_miss_false_alarm_confusion():
    reference = [Segment("A", 0, 10), Segment("B", 10, 20)]
    missed = der_from_segments(reference, [Segment("x", 0, 10), Segment("y", 10, 15)])
    assert (missed.der, missed.miss) == (pytest.approx(0.25), pytest.approx(0.25))
    confused = der_from_segments(reference, [Segment("x", 0, 20)])
    assert (confused.der, confused.confusion) == (pytest.approx(0.5), pytest.approx(0.5))
    extra = der_from_segments(reference, [Segment("x", 0, 10), Segment("y", 10, 25)])
    assert (extra.der, extra.false_alarm) == (pytest.approx(0.25), pytest.approx(0.25))


def test_der_counts_overlap():
    # A and B overlap on [6, 10): one hypothesis speaker covers [0, 15) and is mapped to A (10 s shared vs 9)
    reference = [Segment("A", 0, 10), Segment("B", 6, 15)]
    result = der_from_segments(reference, [Segment("x", 0, 15)])
    assert result.reference_frames == 1900
    assert result.miss == pytest.approx(4 / 19)  # the overlapped second speaker
    assert result.confusion == pytest.approx(5 / 19)  # B alone on [10, 15) labelled as A
    assert result.der == pytest.approx(9 / 19)


def test_der_uses_optimal_not_greedy_mapping():
    # x shares 6 s with A and 5 s with B, y shares 5 s with A: greedy x→A totals 6 s, optimal x→B, y→A 10 s
    reference = [Segment("A", 0, 11), Segment("B", 11, 16)]
    hypothesis = [Segment("x", 5, 16), Segment("y", 0, 5)]
    assert der_from_segments(reference, hypothesis).der == pytest.approx(6 / 16)


def test_der_collar_removes_boundary_frames():
    reference = [Segment("A", 0, 10)]
    hypothesis = [Segment("x", 0.3, 10)]
    assert der_from_segments(reference, hypothesis).der == pytest.approx(0.03)
    assert der_from_segments(reference, hypothesis, collar=0.5).der == 0.0


def test_combine_der_pools_errors_over_recordings():
    reference = [Segment("A", 0, 10), Segment("B", 10, 20)]
    first = der_from_segments(reference, [Segment("x", 0, 10), Segment("y", 10, 15)])  # 5 s missed of 20
    second = der_from_segments([Segment("A", 0, 5)], [Segment("x", 0, 5)])  # perfect, 5 s
    pooled = combine_der([first, second])
    assert pooled.der == pooled.miss == pytest.approx(0.2)
    assert pooled.reference_frames == 2500


def test_der_from_frame_activities():
    reference = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)
    hypothesis = np.array([[0, 1], [0, 1], [1, 0], [1, 0]], dtype=bool)  # channels swapped, one miss, one FA
    result = diarization_error_rate(reference, hypothesis)
    assert (result.miss, result.false_alarm, result.confusion) == (0.25, 0.25, 0.0)


def test_read_rttm(tmp_path):
    path = tmp_path / "ref.rttm"
    path.write_text(
        "SPEAKER rec1 1 0.00 10.00 <NA> <NA> A <NA> <NA>\n"
        "SPEAKER rec1 1 10.00 5.00 <NA> <NA> B <NA> <NA>\n"
        "SPKR-INFO rec1 1 <NA> <NA> <NA> unknown A <NA> <NA>\n"
        "SPEAKER rec2 1 1.5 2.0 <NA> <NA> C <NA> <NA>\n"
    )
    recordings = read_rttm(path)
    assert recordings["rec1"] == [Segment("A", 0.0, 10.0), Segment("B", 10.0, 15.0)]
    assert recordings["rec2"] == [Segment("C", 1.5, 3.5)]
    path.write_text("SPEAKER rec1 1 zero 1.0 <NA> <NA> A\n")
    with pytest.raises(SpeechrepError, match="ref.rttm:1"):
        read_rttm(path)


# ---- QbE: MTWV, MAP, DTW -----------------------------------------------------------------------------------
QBE_SCORES = np.array([[0.9, 0.8, 0.3, 0.1], [0.7, 0.2, 0.6, 0.4]])
QBE_LABELS = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=bool)


def test_mtwv_hand_made():
    # β = 1 (p_target 0.5, unit costs): best threshold 0.9 gives TWV = 1 - mean(0.5 + 0, 1 + 0) = 0.25
    assert maximum_term_weighted_value(QBE_SCORES, QBE_LABELS, 0.5, 1.0, 1.0) == pytest.approx(0.25)
    assert maximum_term_weighted_value(QBE_SCORES, QBE_LABELS) == pytest.approx(0.25)


def test_mtwv_matches_brute_force_with_ties_and_empty_queries():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(5, 12)).astype(float)  # many ties
    labels = rng.random((5, 12)) < 0.3
    labels[4] = False  # a query without matches is skipped
    beta = 1.0 / 100.0 * (1 / 0.0008 - 1)
    kept = labels.any(axis=1)
    best = 0.0
    for threshold in np.unique(scores):
        accepted = scores[kept] >= threshold
        p_miss = 1 - (accepted & labels[kept]).sum(1) / labels[kept].sum(1)
        p_fa = (accepted & ~labels[kept]).sum(1) / (~labels[kept]).sum(1)
        best = max(best, 1 - np.mean(p_miss + beta * p_fa))
    assert maximum_term_weighted_value(scores, labels) == pytest.approx(best)
    assert maximum_term_weighted_value(scores[:4] + 10 * labels[:4], labels[:4]) == pytest.approx(1.0)


def test_map_hand_made():
    # query 1 ranks T F T F: AP = (1 + 2/3) / 2; query 2 ranks its match last of 4: AP = 1/4
    assert mean_average_precision(QBE_SCORES, QBE_LABELS) == pytest.approx((5 / 6 + 1 / 4) / 2)


def _naive_subsequence_dtw(costs: np.ndarray) -> np.ndarray:
    rows, cols = costs.shape
    accumulated = np.full((rows, cols), np.inf)
    for i in range(rows):
        for j in range(cols):
            if i == 0:
                accumulated[i, j] = costs[i, j]
                continue
            best = accumulated[i - 1, j]
            if j > 0:
                best = min(best, accumulated[i - 1, j - 1], accumulated[i, j - 1])
            accumulated[i, j] = costs[i, j] + best
    return accumulated


def test_subsequence_dtw_matches_cell_by_cell_reference():
    costs = torch.rand(3, 6, 11, generator=torch.Generator().manual_seed(0))
    fast = subsequence_dtw_end_costs(costs)
    for b in range(3):
        reference = _naive_subsequence_dtw(costs[b].double().numpy())[-1]
        np.testing.assert_allclose(fast[b].numpy(), reference, atol=1e-9)


def test_qbe_scores_find_the_query_and_ignore_padding():
    generator = torch.Generator().manual_seed(0)
    documents = torch.randn(3, 80, 24, generator=generator)
    # the query is a time-warped, noisy copy of frames 30..49 of document 0
    warped = documents[0, 30:50].repeat_interleave(2, dim=0)[::3]
    query = warped + 0.2 * torch.randn(14, 24, generator=generator)
    lengths = torch.tensor([80, 80, 55])
    scores = qbe_scores(query, documents, lengths)
    assert scores[0] > scores[1] + 0.3 and scores[0] > scores[2] + 0.3
    alone = qbe_scores(query, documents[2:, :55])
    torch.testing.assert_close(scores[2:], alone)


def test_normalized_query_scores_let_one_threshold_fit_queries_of_different_scales():
    # each query's match ranks first among its documents, but on different scales
    raw = torch.tensor([[-0.9, -0.2, -0.8, -0.85], [-0.1, -0.15, 0.3, -0.12]])
    labels = np.array([[0, 1, 0, 0], [0, 0, 1, 0]], dtype=bool)
    normalized = normalize_query_scores(raw)
    torch.testing.assert_close(normalized.mean(1), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(normalized.std(1), torch.ones(2))
    # query 2's non-matches score above query 1's match (-0.2): the best shared threshold misses query 1
    assert maximum_term_weighted_value(raw.numpy(), labels) == pytest.approx(0.5)
    assert maximum_term_weighted_value(normalized.numpy(), labels) == pytest.approx(1.0)


# ---- slot filling ------------------------------------------------------------------------------------------
def test_parse_slots_keeps_only_closed_spans():
    text = "book  B-party_size two people E-party_size at B-time noon E-time B-city paris"
    assert parse_slots(text) == {"party_size": ["two people"], "time": ["noon"]}


def test_slot_type_f1_and_value_cer():
    references = ["B-a xz E-a B-b q E-b", "no slots here", "B-c hello E-c"]
    hypotheses = ["B-a xy E-a B-c q E-c", "none", "B-c help E-c B-c hello E-c"]
    # utterance F1: {a,c} vs {a,b} → 0.5; both empty → 1; {c} vs {c} → 1
    assert slot_type_f1(hypotheses, references) == pytest.approx((0.5 + 1 + 1) / 3)
    # values: xz↔xy (1 of 2), q↔"" (1 of 1), hello↔hello (best of two candidates: 0 of 5)
    assert slot_value_cer(hypotheses, references) == pytest.approx(2 / 8)


# ---- SI-SDR, PESQ, STOI, PIT -------------------------------------------------------------------------------
def _orthogonal_noise(reference: torch.Tensor, snr_db: float, seed: int) -> torch.Tensor:
    reference = reference - reference.mean()
    noise = torch.randn(reference.shape, generator=torch.Generator().manual_seed(seed), dtype=reference.dtype)
    noise = noise - noise.mean()
    noise = noise - (noise @ reference) / (reference @ reference) * reference
    return noise * torch.sqrt(reference.pow(2).sum() / noise.pow(2).sum() / 10 ** (snr_db / 10))


def _tone(seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(16000 * seconds), dtype=torch.float64) / 16000
    return torch.sin(2 * math.pi * 220 * t) + 0.5 * torch.sin(2 * math.pi * 330 * t)


def test_si_sdr_of_itself_and_scaled_copy_hits_the_cap():
    reference = _tone()
    assert si_sdr(reference, reference).item() == pytest.approx(100.0, abs=1e-3)
    assert si_sdr(0.01 * reference + 3.0, reference).item() == pytest.approx(100.0, abs=1e-3)


def test_si_sdr_known_noise_and_improvement():
    reference = _tone()
    assert si_sdr(reference + _orthogonal_noise(reference, 10.0, 0), reference).item() == pytest.approx(10.0)
    louder = 2 * reference + _orthogonal_noise(2 * reference, -5.0, 1)
    assert si_sdr(louder, reference).item() == pytest.approx(-5.0)
    mixture = reference + _orthogonal_noise(reference, 0.0, 2)
    estimate = reference + _orthogonal_noise(reference, 12.0, 3)
    assert si_sdr_improvement(estimate, reference, mixture).item() == pytest.approx(12.0)


def test_pit_finds_the_permutation_for_three_sources():
    generator = torch.Generator().manual_seed(0)
    references = torch.randn(6, 3, 800, generator=generator)
    truth = torch.tensor(list(itertools.permutations(range(3))))  # a different permutation per item
    estimates = torch.empty_like(references)
    estimates.scatter_(1, truth[:, :, None].expand_as(references), references)  # estimate truth[b, j] = ref j
    estimates = estimates + 0.1 * torch.randn(references.shape, generator=generator)
    loss, perm = pit_loss(estimates, references)
    assert torch.equal(perm, truth)
    reordered = reorder_sources(estimates, perm)
    assert loss.item() == pytest.approx(-si_sdr(reordered, references).mean().item(), rel=1e-5)
    assert loss.item() < -15


def test_pit_assign_on_a_hand_made_cost_matrix():
    pairwise = torch.tensor([[[0.0, 5.0], [5.0, 0.0]], [[4.0, 1.0], [2.0, 9.0]]])
    best, perm = pit_assign(pairwise)
    assert perm.tolist() == [[0, 1], [1, 0]]
    assert best.tolist() == [0.0, 1.5]


def _speech_like(seconds: float = 3.0) -> np.ndarray:
    """A voiced, syllable-rate modulated harmonic signal: PESQ's voice activity detector accepts it."""
    t = np.arange(int(seconds * 16000)) / 16000
    phase = 2 * np.pi * np.cumsum(120 + 20 * np.sin(2 * np.pi * 0.5 * t)) / 16000
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 30))
    return 0.3 * harmonics * np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 2


def test_pesq_and_stoi_rank_clean_above_noisy():
    clean = _speech_like()
    noise = np.random.default_rng(0).standard_normal(clean.size)
    assert pesq_wb(clean, clean) == pytest.approx(4.644, abs=1e-3)  # the wide-band maximum
    assert stoi(clean, clean) == pytest.approx(1.0, abs=1e-6)
    light, heavy = clean + 0.01 * noise, clean + 0.2 * noise
    assert pesq_wb(clean, light) > pesq_wb(clean, heavy)
    assert 1.0 > stoi(clean, light) > stoi(clean, heavy)


def test_pesq_and_stoi_reject_bad_audio():
    clean = _speech_like(1.0)
    with pytest.raises(AudioError, match="16 kHz"):
        pesq_wb(clean, clean, sample_rate=8000)
    with pytest.raises(AudioError, match="samples"):
        stoi(clean, clean[:-5])
    with pytest.raises(AudioError, match="silent"):
        pesq_wb(np.zeros(16000), np.zeros(16000))
    with pytest.raises(AudioError, match="PESQ: BufferTooShortError: .* 1/4 of a second"):
        pesq_wb(clean[:2000], clean[:2000])
