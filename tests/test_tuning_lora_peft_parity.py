"""Our LoRA against Hugging Face `peft` (a test extra) on the same attention module: same factor shapes, same
scaling, same initial A distribution and zero B, the same output with the same factors, the same merged weights."""
from __future__ import annotations

import copy

import pytest
import torch

from speechrep.nn.transformer import SelfAttention
from speechrep.tuning import get_tuning

peft = pytest.importorskip("peft")


@pytest.mark.parametrize(("rank", "alpha", "targets"), [(8, 16.0, ("q_proj", "v_proj")),
                                                        (4, 4.0, ("q_proj", "k_proj", "v_proj", "out_proj"))])
def test_our_lora_matches_peft_on_a_self_attention_module(rank: int, alpha: float, targets: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    base = SelfAttention(64, 4).eval()
    theirs = peft.inject_adapter_in_model(
        peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0),
        copy.deepcopy(base))
    ours = get_tuning(f"lora:rank={rank},alpha={alpha:g},targets={'/'.join(targets)}")
    container = torch.nn.Module()  # LoRA inserts into the SelfAttention modules under an upstream
    container.attention = copy.deepcopy(base)
    ours.insert(container)
    generator = torch.Generator().manual_seed(1)
    for name in targets:
        mine, peer = getattr(container.attention, name), getattr(theirs, name)
        assert mine.scale == peer.scaling["default"] == alpha / rank
        assert mine.lora_a.shape == peer.lora_A["default"].weight.shape == (rank, 64)
        assert mine.lora_b.shape == peer.lora_B["default"].weight.shape == (64, rank)
        assert torch.count_nonzero(mine.lora_b) == torch.count_nonzero(peer.lora_B["default"].weight) == 0
        bound = 1.0 / 64 ** 0.5  # kaiming_uniform(a=√5) on a (rank, 64) matrix: U(−1/√64, 1/√64), both
        assert mine.lora_a.abs().max() <= bound and peer.lora_A["default"].weight.abs().max() <= bound
        with torch.no_grad():  # the same trained-looking factors in both
            a, b = torch.randn(rank, 64, generator=generator), 0.1 * torch.randn(64, rank, generator=generator)
            mine.lora_a.copy_(a), mine.lora_b.copy_(b)
            peer.lora_A["default"].weight.copy_(a), peer.lora_B["default"].weight.copy_(b)
    x = torch.randn(3, 20, 64, generator=generator)
    valid = torch.arange(20)[None] < torch.tensor([20, 15, 9])[:, None]
    with torch.no_grad():
        torch.testing.assert_close(container.attention(x, valid), theirs(x, valid), rtol=1e-5, atol=1e-5)
        for name in targets:  # merged weights: W + (alpha/rank)·B·A, as peft merges them
            peer = getattr(theirs, name)
            expected = peer.base_layer.weight + peer.get_delta_weight("default")
            torch.testing.assert_close(getattr(container.attention, name).base.weight
                                       + getattr(container.attention, name).delta(), expected)
