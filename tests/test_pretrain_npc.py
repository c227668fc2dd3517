"""NPC pre-training: predictions never see the frame itself, L1 reconstruction, training run and export."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pretrain_corpus import first_batch, loss_before_and_after, unlabeled_corpus

from speechrep.data.batching import AudioBatch
from speechrep.pretrain import run_method
from speechrep.pretrain.npc import NPCObjective
from speechrep.train import read_metrics
from speechrep.upstream import load_upstream


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unlabeled_corpus(tmp_path_factory)


def test_npc_prediction_ignores_the_frame_and_its_masked_neighbours() -> None:
    torch.manual_seed(0)
    objective = NPCObjective(load_upstream("npc_tiny", dropout=0.0)).eval()  # mask_size 3, kernel 9, 2 blocks
    feats = torch.randn(1, 40, 80, requires_grad=True)
    out, _ = objective.upstream.encode(feats, torch.tensor([40]))
    z = out.hidden_states[-2]  # the summed masked representation the VQ layer quantizes
    (grad,) = torch.autograd.grad(z[0, 20].sum(), feats)
    reach = grad[0].abs().sum(-1)
    assert torch.all(reach[19:22] == 0)  # frame 20 and its ±1 neighbours (input mask 3) are unseen
    assert torch.all(reach[[17, 18, 22, 23]] > 0)  # the context just outside the mask is used


def test_npc_loss_is_mean_l1_reconstruction_of_valid_frames() -> None:
    torch.manual_seed(0)
    objective = NPCObjective(load_upstream("npc_tiny", dropout=0.0)).eval()
    wavs, lens = torch.randn(2, 6400) * 0.1, torch.tensor([6400, 4000])
    feats, lengths = objective.upstream.input_features(wavs, lens)
    out, vq = objective.upstream.encode(feats, lengths)
    pred = objective.head.postnet(out.hidden_states[-1])
    expected = torch.cat([(pred[b, :n] - feats[b, :n]).abs() for b, n in enumerate(lengths.tolist())]).mean()
    loss, scalars = objective(AudioBatch(wavs, lens, cuts=None))
    assert torch.allclose(loss, expected, atol=1e-6)
    assert scalars["code_perplexity"] == pytest.approx(float(vq.perplexity.detach()))


def test_npc_overfits_one_batch(corpus: Path) -> None:
    torch.set_num_threads(1)
    objective = NPCObjective(load_upstream("npc_tiny", dropout=0.0))
    before, after = loss_before_and_after(objective, first_batch(corpus), steps=40)
    assert after < 0.88 * before  # the same masks/codes before and after 40 steps on the batch


def test_npc_trains_and_exports(corpus: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = run_method("npc", corpus, tmp_path / "run", "tiny",
                     ["model.hidden_size=32", "train.max_steps=4", "train.eval_every=4", "train.log_every=1"])
    upstream = load_upstream(out).eval()
    assert upstream.stride == 160 and len(upstream.hidden_sizes) == 5  # 3 blocks, masked sum, quantized
    hidden = upstream(torch.randn(1, 8000), torch.tensor([8000]))
    assert hidden.lengths.tolist() == [48] and all(h.shape == (1, 48, 32) for h in hidden.hidden_states)
    assert all(0 < m["code_usage"] <= 1 for m in read_metrics(tmp_path / "run", "train"))
