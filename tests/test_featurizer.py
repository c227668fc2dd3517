"""Featurizer: softmax-weighted layer sum, one-layer selection, layer norm; run on a frozen or tuned upstream."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechrep.errors import ConfigError
from speechrep.tuning import get_tuning
from speechrep.upstream import Featurizer
from speechrep.upstream.base import UpstreamOutput
from speechrep.upstream.mockingjay import tera_tiny


class _TwoSizes(nn.Module):
    """A toy upstream whose layers have different sizes."""

    sample_rate, stride, hidden_sizes = 16000, 160, [4, 8, 8]

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> UpstreamOutput:
        frames = wavs.unfold(1, 160, 160)
        return UpstreamOutput([frames[..., :4], frames[..., :8], frames[..., 8:16]], wav_lens // 160)


def _batch() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(2, 6400, generator=gen), torch.tensor([6400, 4800])


def test_initial_weights_give_the_mean_of_all_layers() -> None:
    torch.manual_seed(0)
    upstream = tera_tiny().eval()
    feat = Featurizer(upstream.hidden_sizes)
    wavs, lens = _batch()
    out, lengths = feat.featurize(get_tuning("frozen").prepare(upstream), wavs, lens)
    with torch.no_grad():
        ref = upstream(wavs, lens)
    torch.testing.assert_close(out, torch.stack(ref.hidden_states).mean(0))
    assert torch.equal(lengths, ref.lengths)
    torch.testing.assert_close(feat.layer_weights(), torch.full((3,), 1 / 3))


def test_weights_are_a_softmax_and_learn() -> None:
    torch.manual_seed(0)
    upstream = tera_tiny()
    feat = Featurizer(upstream.hidden_sizes)
    with torch.no_grad():
        feat.weights.copy_(torch.tensor([0.0, 1.0, 2.0]))
    hidden = [torch.randn(2, 5, 32) for _ in range(3)]
    lengths = torch.tensor([5, 3])
    out, _ = feat(hidden, lengths)
    w = torch.tensor([0.0, 1.0, 2.0]).softmax(0)
    torch.testing.assert_close(out, sum(wi * h for wi, h in zip(w, hidden)))
    assert feat.layer_weights().sum().item() == pytest.approx(1.0)
    # only the layer weights train; the gradient pushes weight towards the layer that lowers the loss
    opt = torch.optim.SGD(feat.parameters(), lr=1.0)
    loss = (feat.combine(hidden, lengths)[0] - hidden[0]).pow(2).mean()
    loss.backward()
    opt.step()
    assert feat.layer_weights()[0] > w[0]
    assert all(p.grad is None for p in upstream.parameters())


def test_single_layer_is_returned_as_is_and_may_skip_mixed_sizes() -> None:
    toy = _TwoSizes()
    wavs, lens = _batch()
    ref = toy(wavs, lens)
    out, lengths = Featurizer(toy.hidden_sizes, layers=[0]).featurize(toy, wavs, lens)
    assert torch.equal(out, ref.hidden_states[0]) and torch.equal(lengths, lens // 160)
    out, _ = Featurizer(toy.hidden_sizes, layers=[-1]).featurize(toy, wavs, lens)
    assert torch.equal(out, ref.hidden_states[2])
    two, _ = Featurizer(toy.hidden_sizes, layers=[1, 2]).featurize(toy, wavs, lens)
    torch.testing.assert_close(two, (ref.hidden_states[1] + ref.hidden_states[2]) / 2)


def test_mixed_sizes_default_to_the_layers_of_the_last_size() -> None:
    toy = _TwoSizes()
    wavs, lens = _batch()
    ref = toy(wavs, lens)
    feat = Featurizer(toy.hidden_sizes)  # sizes [a, b, b]: layers 1 and 2, equal weights at first
    out, _ = feat.featurize(toy, wavs, lens)
    torch.testing.assert_close(out, (ref.hidden_states[1] + ref.hidden_states[2]) / 2)
    assert feat.layers == [1, 2] and feat.layer_weights().tolist() == [0.0, 0.5, 0.5]
    assert Featurizer([8, 8]).layer_weights().tolist() == [0.5, 0.5]  # equal sizes: as before


def test_mixed_sizes_and_bad_layers_are_config_errors() -> None:
    toy = _TwoSizes()
    with pytest.raises(ConfigError, match="different sizes"):
        Featurizer(toy.hidden_sizes, layers=[0, 1])
    with pytest.raises(ConfigError, match="out of range"):
        Featurizer(toy.hidden_sizes, layers=[3])
    with pytest.raises(ConfigError, match="repeat"):
        Featurizer(toy.hidden_sizes, layers=[1, -2])
    with pytest.raises(ConfigError, match="hidden states"):
        Featurizer(toy.hidden_sizes, layers=[1, 2]).combine([torch.zeros(1, 2, 8)] * 2, torch.tensor([2]))


def test_normalize_applies_affine_free_layer_norm_per_layer() -> None:
    hidden = [torch.randn(2, 5, 8) * s + s for s in (1.0, 10.0, 100.0)]
    feat = Featurizer(_TwoSizes.hidden_sizes, layers=[1, 2], normalize=True)
    out, _ = feat.combine(hidden, torch.tensor([5, 4]))
    expected = (F.layer_norm(hidden[1], (8,)) + F.layer_norm(hidden[2], (8,))) / 2
    torch.testing.assert_close(out, expected)
    # without normalisation the large-scale layer would dominate
    plain, _ = Featurizer(_TwoSizes.hidden_sizes, layers=[1, 2]).combine(hidden, torch.tensor([5, 4]))
    assert (plain - expected).abs().max() > 1


def test_featurizer_holds_no_upstream() -> None:
    feat = Featurizer(tera_tiny().hidden_sizes)
    assert [name for name, _ in feat.named_parameters()] == ["weights"]
    assert set(feat.state_dict()) == {"weights"}


def test_frozen_upstream_stays_in_eval_and_full_tuning_gives_it_gradients() -> None:
    torch.manual_seed(0)
    wavs, lens = _batch()
    upstream = tera_tiny()
    frozen = get_tuning("frozen").prepare(upstream).train()
    feat = Featurizer(upstream.hidden_sizes).train()
    assert not upstream.training and not list(frozen.parameters())
    assert all(not p.requires_grad for p in upstream.parameters())
    out, _ = feat.featurize(frozen, wavs, lens)
    out.sum().backward()
    assert feat.weights.grad is not None and all(p.grad is None for p in upstream.parameters())
    tuned = get_tuning("full").prepare(tera_tiny(dropout=0.0)).train()
    assert tuned.training
    out, _ = Featurizer(tuned.hidden_sizes).featurize(tuned, wavs, lens)
    out.sum().backward()
    assert all(p.grad is not None for p in tuned.parameters())


def test_frozen_single_layer_features_train_a_head() -> None:
    torch.manual_seed(0)
    wavs, lens = _batch()
    upstream = tera_tiny()
    feat = Featurizer(upstream.hidden_sizes, layers=[1])
    head = nn.Linear(32, 2)
    out, _ = feat.featurize(get_tuning("frozen").prepare(upstream), wavs, lens)
    head(out).sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
