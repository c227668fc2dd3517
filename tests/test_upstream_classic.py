"""Classic hub families: numbers for the quantizers, RNN stack, APC, NPC's masking, the Mockingjay/TERA
encoder (parity with Hugging Face's BERT encoder), CPC's conv arithmetic and the feature baselines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speechrep.audio import features
from speechrep.nn.quantizers import GumbelVectorQuantizer, NearestNeighbourQuantizer
from speechrep.nn.rnn import RNNStack
from speechrep.upstream.apc import APCConfig, APCHead, apc_tiny
from speechrep.upstream.baselines import fbank, fbank_raw, mfcc, spectrogram
from speechrep.upstream.cpc import cpc, cpc_tiny
from speechrep.nn.frames import stack_frames
from speechrep.upstream.mockingjay import Mockingjay, MockingjayConfig, audio_albert_tiny, mockingjay_tiny
from speechrep.upstream.npc import NPC, NPCConfig


def _wavs(lengths: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=gen)
    return wavs, torch.tensor(lengths)


# ------------------------------------------------------------------------------------------------ quantizers
def test_gumbel_eval_picks_argmax_codes_from_each_group() -> None:
    torch.manual_seed(0)
    vq = GumbelVectorQuantizer(input_dim=6, code_dim=8, entries=5, groups=2).eval()
    x = torch.randn(2, 7, 6)
    out = vq(x)
    logits = (x @ vq.weight_proj.weight.T + vq.weight_proj.bias).view(2, 7, 2, 5)
    assert torch.equal(out.codes, logits.argmax(-1))
    expected = torch.cat([vq.codebook[0][out.codes[..., 0]], vq.codebook[1][out.codes[..., 1]]], dim=-1)
    torch.testing.assert_close(out.quantized, expected)


def test_gumbel_perplexity_and_diversity_loss() -> None:
    vq = GumbelVectorQuantizer(input_dim=4, code_dim=4, entries=4, groups=1).eval()
    with torch.no_grad():
        vq.weight_proj.weight.copy_(torch.eye(4) * 50.0)  # frame k → code k with probability ≈ 1
    x = torch.eye(4)[None]  # every code used once: perplexity = entries
    out = vq(x)
    assert out.codes.flatten().tolist() == [0, 1, 2, 3]
    assert out.perplexity.item() == pytest.approx(4.0, rel=1e-4)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-4)
    # masking out three frames leaves one code in use: perplexity 1
    mask = torch.tensor([[True, False, False, False]])
    assert vq(x, mask).perplexity.item() == pytest.approx(1.0, rel=1e-4)


def test_gumbel_grouped_input_keeps_groups_apart() -> None:
    torch.manual_seed(0)
    vq = GumbelVectorQuantizer(input_dim=8, code_dim=8, entries=16, groups=2, grouped_input=True).eval()
    x = torch.randn(1, 20, 8)
    y = x.clone()
    y[..., 4:] = torch.randn(1, 20, 4)  # change only group 1's slice
    a, b = vq(x), vq(y)
    assert torch.equal(a.codes[..., 0], b.codes[..., 0])
    assert not torch.equal(a.codes[..., 1], b.codes[..., 1])
    assert sum(p.numel() for p in vq.weight_proj.parameters()) == 2 * 4 * 16 + 32


def test_gumbel_training_samples_one_hot_with_straight_through_gradients() -> None:
    torch.manual_seed(0)
    vq = GumbelVectorQuantizer(input_dim=6, code_dim=6, entries=10, groups=3, temperature=2.0).train()
    x = torch.randn(2, 5, 6, requires_grad=True)
    out = vq(x)
    rows = out.quantized.view(2, 5, 3, 2)
    for g in range(3):  # each group's output is exactly one codebook row
        dist = torch.cdist(rows[:, :, g].reshape(-1, 2), vq.codebook[g].detach())
        assert torch.allclose(dist.min(-1).values, torch.zeros(10), atol=1e-6)
    out.quantized.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and vq.codebook.grad.abs().sum() > 0


def test_nearest_neighbour_quantizer_matches_brute_force() -> None:
    torch.manual_seed(0)
    vq = NearestNeighbourQuantizer(dim=3, entries=7, commitment=0.25)
    x = torch.randn(2, 9, 3, requires_grad=True)
    out = vq(x)
    brute = ((x[:, :, None, :] - vq.codebook[None, None]) ** 2).sum(-1).argmin(-1)
    assert torch.equal(out.codes[..., 0], brute)
    torch.testing.assert_close(out.quantized, vq.codebook[brute])
    chosen = vq.codebook[brute].detach()
    expected = ((chosen - x.detach()) ** 2).mean() * 1.25
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.quantized.sum().backward()  # straight-through: d(sum)/dx = 1
    torch.testing.assert_close(x.grad, torch.ones_like(x))


# --------------------------------------------------------------------------------------------------- RNN, APC
def test_rnn_stack_matches_plain_grus_with_residual() -> None:
    torch.manual_seed(0)
    stack = RNNStack(5, 8, 3, "gru", residual=True).eval()
    x = torch.randn(1, 12, 5)
    outs = stack(x, torch.tensor([12]))
    h1, _ = stack.layers[0](x)
    h2 = stack.layers[1](h1)[0] + h1
    h3 = stack.layers[2](h2)[0] + h2
    for got, want in zip(outs, (h1, h2, h3)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rnn_stack_on_a_padded_batch_equals_each_utterance_alone(cell: str) -> None:
    torch.manual_seed(0)
    stack = RNNStack(5, 8, 2, cell, residual=True)
    x = torch.randn(3, 15, 5, requires_grad=True)
    lengths = torch.tensor([15, 9, 4])
    outs = stack(x, lengths)
    sum(o.pow(2).sum() for o in outs).backward()
    for b, n in enumerate(lengths.tolist()):
        alone = x[b:b + 1, :n].detach().requires_grad_()
        alone_outs = stack(alone, torch.tensor([n]))
        for got, want in zip(outs, alone_outs):
            torch.testing.assert_close(got[b, :n], want[0], atol=1e-6, rtol=1e-5)
            assert not got[b, n:].any()
        sum(o.pow(2).sum() for o in alone_outs).backward()
        torch.testing.assert_close(x.grad[b, :n], alone.grad[0], atol=1e-6, rtol=1e-5)
        assert not x.grad[b, n:].any()


def test_apc_is_causal_and_head_loss_is_l1_n_ahead() -> None:
    torch.manual_seed(0)
    model = apc_tiny(dropout=0.0).eval()
    feats = torch.randn(1, 30, 80)
    lengths = torch.tensor([30])
    base = model.forward_features(feats, lengths).hidden_states
    later = feats.clone()
    later[:, 20:] += 1.0
    changed = model.forward_features(later, lengths).hidden_states
    for a, b in zip(base, changed):
        torch.testing.assert_close(a[:, :20], b[:, :20])  # the future never reaches the past
        assert not torch.allclose(a[:, 20:], b[:, 20:])
    head = APCHead(APCConfig(hidden_size=32, n_future=3))
    pred = head.postnet(base[-1])
    expected = (pred[:, :-3] - feats[:, 3:]).abs().mean()
    assert head.loss(base[-1], feats, lengths).item() == pytest.approx(expected.item(), rel=1e-6)


# -------------------------------------------------------------------------------------------------------- NPC
def test_npc_representation_never_sees_the_masked_neighbourhood() -> None:
    torch.manual_seed(0)
    model = NPC(NPCConfig(hidden_size=16, num_blocks=4, kernel_size=15, mask_size=5, vq_groups=2,
                          vq_codebook_size=4, dropout=0.0)).eval()
    feats = torch.randn(1, 60, 80)
    lengths = torch.tensor([60])
    z = model.forward_features(feats, lengths).hidden_states[-2]
    t = 30
    near = feats.clone()
    near[:, t - 2: t + 3] = torch.randn(1, 5, 80)  # the 5 frames NPC must not see when encoding t
    torch.testing.assert_close(model.forward_features(near, lengths).hidden_states[-2][:, t], z[:, t])
    far = feats.clone()
    far[:, t + 3] += 1.0  # just outside the mask: inside the receptive field
    assert not torch.allclose(model.forward_features(far, lengths).hidden_states[-2][:, t], z[:, t])


# ------------------------------------------------------------------------------------------ Mockingjay / TERA
def _copy_into_bert(model: Mockingjay):
    """A Hugging Face BertEncoder (eager attention) carrying the weights of `model`'s layers."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEncoder

    c = model.config
    cfg = BertConfig(hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
                     num_attention_heads=c.num_heads,
                     intermediate_size=c.ffn_size, hidden_act="gelu", layer_norm_eps=1e-12)
    cfg._attn_implementation = "eager"
    bert = BertEncoder(cfg).eval()
    for i, layer in enumerate(bert.layer):
        ours = model.layers[0 if c.share_layers else i]
        att = layer.attention
        with torch.no_grad():
            for lin, w, b in zip((att.self.query, att.self.key, att.self.value),
                                 ours.qkv.weight.chunk(3), ours.qkv.bias.chunk(3)):
                lin.weight.copy_(w)
                lin.bias.copy_(b)
        att.output.dense.load_state_dict(ours.out.state_dict())
        att.output.LayerNorm.load_state_dict(ours.attn_norm.state_dict())
        layer.intermediate.dense.load_state_dict(ours.ffn[0].state_dict())
        layer.output.dense.load_state_dict(ours.ffn[3].state_dict())
        layer.output.LayerNorm.load_state_dict(ours.ffn_norm.state_dict())
    return bert


@pytest.mark.parametrize("share_layers", [False, True])
def test_mockingjay_layers_match_huggingface_bert(share_layers: bool) -> None:
    torch.manual_seed(0)
    model = Mockingjay(MockingjayConfig(hidden_size=32, num_layers=3, num_heads=4, ffn_size=64,
                                        share_layers=share_layers)).eval()
    bert = _copy_into_bert(model)
    feats, lengths = torch.randn(2, 15, 80), torch.tensor([15, 9])
    ours = model.forward_features(feats, lengths).hidden_states
    valid = torch.arange(15)[None] < lengths[:, None]
    additive = torch.zeros(2, 1, 1, 15).masked_fill(~valid[:, None, None], torch.finfo(torch.float32).min)
    h = ours[0]
    for i, layer in enumerate(bert.layer):
        h = layer(h, attention_mask=additive)
        h = (h[0] if isinstance(h, tuple) else h) * valid[..., None]
        torch.testing.assert_close(ours[i + 1], h, atol=1e-5, rtol=1e-5)


def test_embedding_is_projection_plus_sinusoids_then_layer_norm() -> None:
    torch.manual_seed(0)
    model = mockingjay_tiny().eval()
    feats, lengths = torch.randn(1, 6, 240), torch.tensor([6])
    pos = torch.arange(6.0)[:, None]
    freq = 10000 ** (-torch.arange(0, 32, 2) / 32)
    enc = torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).flatten(1)
    norm = model.input_norm
    expected = F.layer_norm(model.input_proj(feats) + enc, (32,), norm.weight, norm.bias, eps=1e-12)
    torch.testing.assert_close(model.forward_features(feats, lengths).hidden_states[0], expected,
                               atol=1e-5, rtol=1e-5)


def test_audio_albert_shares_one_layer() -> None:
    shared = audio_albert_tiny()
    separate = Mockingjay(MockingjayConfig(hidden_size=32, num_layers=3, num_heads=4, ffn_size=64))
    per_layer = sum(p.numel() for p in separate.layers[0].parameters())
    n_shared = sum(p.numel() for p in shared.parameters())
    assert n_shared == sum(p.numel() for p in separate.parameters()) - 2 * per_layer


def test_stack_frames_concatenates_consecutive_frames_and_mockingjay_stride() -> None:
    feats = torch.arange(2 * 7 * 2, dtype=torch.float32).view(2, 7, 2)
    stacked, lengths = stack_frames(feats, torch.tensor([7, 5]), 3, tail="drop")
    assert stacked.shape == (2, 2, 6) and lengths.tolist() == [2, 1]
    assert stacked[0, 1].tolist() == feats[0, 3:6].flatten().tolist()
    model = mockingjay_tiny().eval()
    wavs, lens = _wavs((16000, 8000))
    out = model(wavs, lens)
    assert model.stride == 480
    assert out.lengths.tolist() == [(1 + (16000 - 400) // 160) // 3, (1 + (8000 - 400) // 160) // 3]


# -------------------------------------------------------------------------------------------------------- CPC
def test_cpc_conv_arithmetic_and_channel_norm() -> None:
    model = cpc_tiny().eval()
    assert model.stride == 160
    lens = torch.arange(1, 20000)
    assert torch.equal(model.output_lengths(lens), (lens + 1) // 160)
    for n in (16000, 15999, 3358, 3359):  # the conv stack itself produces that many frames
        z, frames = model.encode(torch.randn(1, n), torch.tensor([n]))
        assert z.shape == (1, (n + 1) // 160, 32) and frames.tolist() == [(n + 1) // 160]
    big = cpc()
    assert big.hidden_sizes == [256, 256]
    norm = big.norms[0]
    x = torch.randn(2, 256, 10) * 3 + 1
    y = norm(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 10), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1), torch.ones(2, 10), atol=1e-3, rtol=0)  # Bessel-corrected variance


# -------------------------------------------------------------------------------------------------- baselines
def test_fbank_baselines_match_kaldi_native_fbank() -> None:
    knf = pytest.importorskip("kaldi_native_fbank")
    wavs, lens = _wavs((8000, 5000))
    raw = fbank_raw()(wavs, lens)
    for i, n in enumerate(lens.tolist()):
        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0.0
        opts.mel_opts.num_bins = 80
        comp = knf.OnlineFbank(opts)
        comp.accept_waveform(16000, (wavs[i, :n] * 32768).tolist())
        comp.input_finished()
        ref = torch.from_numpy(np.stack([comp.get_frame(t) for t in range(comp.num_frames_ready)]))
        assert int(raw.lengths[i]) == len(ref)
        torch.testing.assert_close(raw.hidden_states[0][i, : len(ref)], ref, atol=1e-3, rtol=1e-4)
    normed = fbank()(wavs, lens).hidden_states[0]
    torch.testing.assert_close(normed, features.cmvn(raw.hidden_states[0], raw.lengths))
    assert normed[0].mean(0).abs().max() < 1e-4


def test_mfcc_and_spectrogram_sizes() -> None:
    wavs, lens = _wavs((4000,))
    m = mfcc()
    out = m(wavs, lens)
    assert m.hidden_sizes == [39] and out.hidden_states[0].shape == (1, 23, 39)
    s = spectrogram()
    assert s.hidden_sizes == [257] and s(wavs, lens).hidden_states[0].shape == (1, 23, 257)


def test_cpc_head_infonce_matches_manual_scores() -> None:
    from speechrep.upstream.cpc import CPCConfig, CPCHead

    torch.manual_seed(0)
    head = CPCHead(CPCConfig(hidden_size=16), n_predicts=2, n_negatives=3, num_heads=2)
    context, encoded, lengths = torch.randn(2, 6, 16), torch.randn(2, 6, 16), torch.tensor([6, 4])
    loss, acc = head(context, encoded, lengths, generator=torch.Generator().manual_seed(1))
    # redo the computation by hand with the same negative draw
    pool = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])  # flat indices of the 6 + 4 valid frames
    draw = torch.randint(10, (2, 6, 3), generator=torch.Generator().manual_seed(1))
    negatives = encoded.flatten(0, 1)[pool[draw]]
    manual = []
    for k in (1, 2):
        pred = head.predictors[k - 1](context)
        terms = []
        for b in range(2):
            for t in range(int(lengths[b]) - k):
                cands = torch.cat([encoded[b, t + k][None], negatives[b, t]])
                terms.append(-torch.log_softmax((pred[b, t] * cands).mean(-1), 0)[0])
        manual.append(torch.stack(terms).mean())
    assert loss.item() == pytest.approx(torch.stack(manual).mean().item(), rel=1e-5)
    assert acc.shape == (2,) and ((acc >= 0) & (acc <= 1)).all()
    # causal predictors: changing the last context frame leaves earlier predictions alone
    changed = context.clone()
    changed[:, -1] += 1
    torch.testing.assert_close(head.predictors[0](changed)[:, :-1], head.predictors[0](context)[:, :-1])
