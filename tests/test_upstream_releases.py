"""Published non-fairseq checkpoints (S3PRL's releases, modified CPC, MelHuBERT) load through `load_upstream`.

Each test writes a checkpoint in the release's published key layout and config structure (from a speechrep
model's weights, renamed to the published names), loads it by path and compares every hidden state with the
source model's. No downloads.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from speechrep import load_upstream
from speechrep.errors import CheckpointError, ConfigError
from speechrep.upstream.loading import read_state_dict
from speechrep.upstream.melhubert import read_melhubert_stats

# our key → the published (fairseq-style) name, for the wav2vec2-style encoders of DistilHuBERT and MelHuBERT
_TO_FAIRSEQ = [
    (r"^feature_encoder\.layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"^feature_encoder\.layers\.(\d+)\.norm\.", r"feature_extractor.conv_layers.\1.2."),
    (r"^feature_projection\.linear\.", "post_extract_proj."),
    (r"^projection\.", "pre_extract_proj."),
    (r"^encoder\.pos_conv\.layers\.0\.conv\.parametrizations\.weight\.original0$",
     "encoder.pos_conv.0.weight_g"),
    (r"^encoder\.pos_conv\.layers\.0\.conv\.parametrizations\.weight\.original1$",
     "encoder.pos_conv.0.weight_v"),
    (r"^encoder\.pos_conv\.layers\.0\.conv\.bias$", "encoder.pos_conv.0.bias"),
    (r"^encoder\.norm\.", "encoder.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.", r"encoder.layers.\1.self_attn.\2_proj."),
    (r"^encoder\.layers\.(\d+)\.attention_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"^encoder\.layers\.(\d+)\.ffn\.fc(1|2)\.", r"encoder.layers.\1.fc\2."),
    (r"^encoder\.layers\.(\d+)\.ffn_norm\.", r"encoder.layers.\1.final_layer_norm."),
]


def _rename(state: dict[str, Tensor], rules: list[tuple[str, str]], drop: str = r"^$") -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        if re.match(drop, key):
            continue
        for pattern, target in rules:
            if re.match(pattern, key):
                key = re.sub(pattern, target, key, count=1)
                break
        out[key] = value.clone()
    return out


def _wavs() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(2, 8000, generator=generator), torch.tensor([8000, 6400])


def _assert_same_hidden_states(source: torch.nn.Module, path: Path, **overrides) -> torch.nn.Module:
    loaded = load_upstream(str(path)).eval()
    for name, value in overrides.items():
        getattr(loaded, name)(*value)
    wavs, lens = _wavs()
    with torch.no_grad():
        want, got = source.eval()(wavs, lens), loaded(wavs, lens)
    assert len(got.hidden_states) == len(want.hidden_states)
    assert torch.equal(got.lengths, want.lengths)
    for index, (a, b) in enumerate(zip(got.hidden_states, want.hidden_states)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"hidden state {index}: {m}")
    return loaded


def _distiller_checkpoint(source: torch.nn.Module) -> dict:
    state = _rename(source.state_dict(), _TO_FAIRSEQ, drop=r"^mask_emb$")
    width = source.config.hidden_size
    state.update({  # the prediction heads (expand-last: Linear → GELU → SplitLinear), dropped on load
        "output_layer.0.weight": torch.randn(2 * width, width), "output_layer.0.bias": torch.zeros(2 * width),
        "output_layer.2.weight": torch.randn(2, width, 16), "output_layer.2.bias": torch.zeros(1, 1, 2, 16),
    })
    conv = " + ".join(f"[({c},{k},{s})]" for c, k, s in source.config.conv_layers)
    distiller = dict(
        extractor_mode="default", extractor_conv_feature_layers=conv, extractor_dropout=0.0,
        feature_grad_mult=0.1, conv_pos=source.config.pos_conv_kernel,
        conv_pos_groups=source.config.pos_conv_groups,
        encoder_layers=source.config.num_layers, encoder_embed_dim=width,
        encoder_ffn_embed_dim=source.config.ffn_size, encoder_attention_heads=source.config.num_heads,
        activation_fn="gelu", layer_norm_first=False, attention_type="original", dropout=0.1,
        attention_dropout=0.1, activation_dropout=0.1, encoder_layerdrop=0.0, final_dim=16,
        out_layer_type="expand-last", n_tasks=2, task_emb_type="expand-last", pred_layer_id=[4, 12],
    )
    return {"Distiller": state, "Config": {"distiller": distiller, "teacher": {"model": "hubert_base"}},
            "Step": 200000, "Optimizer": {"state": {}, "param_groups": []}}


def test_s3prl_distilhubert(tmp_path: Path) -> None:
    source = load_upstream("distilhubert_tiny")
    path = tmp_path / "distilhubert_ls960_4-8-12.ckpt"
    torch.save(_distiller_checkpoint(source), path)
    loaded = _assert_same_hidden_states(source, path)
    assert loaded.family == "distilhubert" and loaded.provenance["format"] == "s3prl_distiller"
    assert set(read_state_dict(path)) <= set(source.state_dict())


def test_melhubert_release_with_its_statistics_file(tmp_path: Path) -> None:
    source = load_upstream("melhubert_tiny")
    stats = np.stack([np.linspace(-3, 3, 40), np.linspace(1, 4, 40)]).astype(np.float32)
    np.save(tmp_path / "libri-360-mean-std.npy", stats)
    mean, std = read_melhubert_stats(tmp_path / "libri-360-mean-std.npy")
    source.set_feature_stats(mean, std)
    state = _rename(source.state_dict(), _TO_FAIRSEQ, drop=r"^feature_(mean|std)$")
    state["final_proj.weight"], state["final_proj.bias"] = torch.randn(512, 32), torch.zeros(512)
    c = source.config
    melhubert = dict(feat_emb_dim=80, pos_emb_type="conv", pos_conv_depth=1, conv_pos=c.pos_conv_kernel,
                     conv_pos_groups=c.pos_conv_groups, encoder_layers=c.num_layers, encoder_embed_dim=32,
                     encoder_ffn_embed_dim=c.ffn_size, encoder_attention_heads=c.num_heads,
                     activation_fn="gelu",
                     layer_norm_first=False, attention_type="original", num_cluster=512, mask_prob=0.7,
                     learnable_mask_emb=False, mask_before_proj=True, dropout=0.1, attention_dropout=0.1,
                     activation_dropout=0.1, encoder_layerdrop=0.0)
    path = tmp_path / "checkpoint-400000.ckpt"
    torch.save({"model": state, "Upstream_Config": {"melhubert": melhubert}, "Step": 400000}, path)
    loaded = _assert_same_hidden_states(source, path, set_feature_stats=(mean, std))
    assert loaded.family == "melhubert" and loaded.config.stack_frames == 2


def _s3prl_audio() -> dict:
    return {"feat_type": "fbank", "feat_dim": 80, "frame_length": 25, "frame_shift": 10, "decode_wav": False,
            "cmvn": True}


@pytest.mark.parametrize("name", ["apc_tiny", "vq_apc_tiny"])
def test_s3prl_apc_and_vq_apc(name: str, tmp_path: Path) -> None:
    source = load_upstream(name, window_type="hamming")
    c = source.config
    state = _rename(source.state_dict(), [(r"^rnn\.layers\.(\d+)\.", r"rnn_layers.\1.")], drop=r"^vq\.")
    state["postnet.weight"], state["postnet.bias"] = torch.randn(80, c.hidden_size), torch.zeros(80)
    paras = {"num_layers": c.num_layers, "hidden_size": c.hidden_size, "dropout": 0.1, "residual": True}
    if c.vq_codebook_size:
        dim, biases = c.hidden_size // c.vq_groups, source.vq.weight_proj.bias.view(c.vq_groups, -1)
        for g in range(c.vq_groups):
            state[f"vq_layers.{g}.vq_logits.weight"] = source.vq.weight_proj.weight[g].T.clone()
            state[f"vq_layers.{g}.vq_logits.bias"] = biases[g].clone()
            state[f"vq_layers.{g}.codebook_CxE.weight"] = source.vq.codebook[g].T.clone()
        paras["vq"] = {"codebook_size": [c.vq_codebook_size] * c.vq_groups, "code_dim": [dim] * c.vq_groups,
                       "gumbel_temperature": 0.5}
    config = {"model": {"paras": paras}, "task": {"sequence_length": 1500, "n_future": 5},
              "data": {"audio": _s3prl_audio()}}
    path = tmp_path / "apc_360hr.ckpt"
    torch.save({"model": state, "config": config, "Upstream_Config": config}, path)
    loaded = _assert_same_hidden_states(source, path)
    assert loaded.family == "apc" and loaded.config.window_type == "hamming"
    assert loaded.config.vq_groups == c.vq_groups and loaded.config.n_future == 5


def test_s3prl_npc(tmp_path: Path) -> None:
    source = load_upstream("npc_tiny", window_type="hamming")
    c = source.config
    with torch.no_grad():  # non-trivial batch-norm statistics
        for block in source.blocks:
            for norm in (block.norm1, block.norm2):
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
    rules = [(r"^blocks\.(\d+)\.norm1\.", r"blocks.\1.bn1."),
             (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.bn2."),
             (r"^masked_convs\.(\d+)\.", r"masked_convs.\1.conv.")]
    state = _rename(source.state_dict(), rules, drop=r"^vq\.")
    for i, conv in enumerate(source.masked_convs):
        state[f"masked_convs.{i}.conv_mask"] = conv.tap_mask.expand_as(conv.weight).clone()
    dim, biases = c.hidden_size // c.vq_groups, source.vq.weight_proj.bias.view(c.vq_groups, -1)
    for g in range(c.vq_groups):
        state[f"vq_layers.{g}.vq_logits.weight"] = source.vq.weight_proj.weight[g].T.clone()
        state[f"vq_layers.{g}.vq_logits.bias"] = biases[g].clone()
        state[f"vq_layers.{g}.codebook_CxE.weight"] = source.vq.codebook[g].T.clone()
    state["postnet.weight"], state["postnet.bias"] = torch.randn(80, c.hidden_size), torch.zeros(80)
    paras = {"kernel_size": c.kernel_size, "mask_size": c.mask_size, "n_blocks": c.num_blocks,
             "hidden_size": c.hidden_size, "dropout": 0.1, "residual": True, "batch_norm": True,
             "activate": "relu", "disable_cross_layer": False,
             "vq": {"codebook_size": [c.vq_codebook_size] * c.vq_groups, "code_dim": [dim] * c.vq_groups,
                    "gumbel_temperature": 1.0}}
    path = tmp_path / "npc_360hr.ckpt"
    config = {"model": {"paras": paras}, "data": {"audio": _s3prl_audio()}}
    torch.save({"model": state, "config": config}, path)
    assert _assert_same_hidden_states(source, path).family == "npc"


_TO_S3PRL_TRANSFORMER = [
    (r"^input_proj\.", "input_representations.spec_transform."),
    (r"^input_norm\.weight$", "input_representations.LayerNorm.gamma"),  # an old file's LayerNorm names
    (r"^input_norm\.bias$", "input_representations.LayerNorm.beta"),
    (r"^layers\.(\d+)\.out\.", r"encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.attn_norm\.", r"encoder.layer.\1.attention.output.LayerNorm."),
    (r"^layers\.(\d+)\.ffn\.0\.", r"encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.ffn\.3\.", r"encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.ffn_norm\.", r"encoder.layer.\1.output.LayerNorm."),
]


def _s3prl_transformer_state(source: torch.nn.Module) -> dict[str, Tensor]:
    c, own = source.config, source.state_dict()
    state = {}
    for i in range(c.num_layers):  # Audio ALBERT: every index holds the shared layer's tensors
        j = 0 if c.share_layers else i
        layer = {k.replace(f"layers.{j}.", f"layers.{i}.", 1): v for k, v in own.items()
                 if k.startswith(f"layers.{j}.")}
        query, key, value = layer.pop(f"layers.{i}.qkv.weight").chunk(3)
        bq, bk, bv = layer.pop(f"layers.{i}.qkv.bias").chunk(3)
        for part, (w, b) in {"query": (query, bq), "key": (key, bk), "value": (value, bv)}.items():
            state[f"encoder.layer.{i}.attention.self.{part}.weight"] = w.clone()
            state[f"encoder.layer.{i}.attention.self.{part}.bias"] = b.clone()
        state.update(_rename(layer, _TO_S3PRL_TRANSFORMER))
    state.update(_rename({k: v for k, v in own.items() if k.startswith("input_")}, _TO_S3PRL_TRANSFORMER))
    return state


@pytest.mark.parametrize("name", ["tera_tiny", "mockingjay_tiny", "audio_albert_tiny"])
def test_s3prl_mockingjay_tera_audio_albert(name: str, tmp_path: Path) -> None:
    source = load_upstream(name)
    c = source.config
    transformer = {"input_dim": -1, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_layers,
                   "num_attention_heads": c.num_heads, "intermediate_size": c.ffn_size, "hidden_act": "gelu",
                   "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
                   "layer_norm_eps": 1e-12, "share_layer": c.share_layers, "pre_layer_norm": False}
    audio = {"target_level": -25, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": 80, "n_mfcc": 13,
             "input": {"feat_type": "mel", "channel": 0, "log": True, "delta": 0, "cmvn": True},
             "target": {"feat_type": "mel", "channel": 1, "log": True, "delta": 0, "cmvn": True}}
    spec_head = {"dense.weight": torch.randn(c.hidden_size, c.hidden_size), "output.bias": torch.zeros(80)}
    path = tmp_path / "states-1000000.ckpt"
    torch.save({"Transformer": _s3prl_transformer_state(source), "SpecHead": spec_head,
                "Upstream_Config": {"transformer": transformer, "audio": audio,
                                    "task": {"sequence_length": 1500}},
                "Config": {"runner": {}}}, path)
    loaded = _assert_same_hidden_states(source, path)
    assert loaded.family == "mockingjay" and loaded.config == c


@pytest.mark.parametrize("layout", ["weights_and_config", "cpc_audio"])
def test_modified_cpc(layout: str, tmp_path: Path) -> None:
    source = load_upstream("cpc_tiny")
    rules = [(r"^convs\.(\d+)\.", r"gEncoder.conv\1."), (r"^norms\.(\d+)\.", r"gEncoder.batchNorm\1."),
             (r"^lstm\.layers\.(\d+)\.(\w+)_l0$", r"gAR.baseNet.\2_l\1")]
    state = _rename(source.state_dict(), rules)
    assert "gAR.baseNet.weight_ih_l1" in state
    if layout == "weights_and_config":
        args = {"hiddenEncoder": 32, "hiddenGar": 32, "nLevelsGRU": 2, "arMode": "LSTM",
                "normMode": "layerNorm", "encoder_type": "cpc", "cpc_mode": None,
                "samplingType": "samespeaker", "nPredicts": 12}
        checkpoint = {"weights": state, "config": args}
    else:
        checkpoint = {"gEncoder": state, "cpcCriterion": {"wPrediction.0.weight": torch.zeros(3)},
                      "optimizer": {}, "best": None}
    path = tmp_path / "60k_epoch4.pt"
    torch.save(checkpoint, path)
    assert _assert_same_hidden_states(source, path).family == "cpc"


def test_release_misfits_are_reported_key_by_key(tmp_path: Path) -> None:
    checkpoint = _distiller_checkpoint(load_upstream("distilhubert_tiny"))
    del checkpoint["Distiller"]["encoder.layers.1.fc1.weight"]
    checkpoint["Distiller"]["encoder.layers.0.self_attn.extra_proj.weight"] = torch.zeros(3)
    path = tmp_path / "broken.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as error:
        load_upstream(str(path))
    message = str(error.value)
    assert "missing: encoder.layers.1.ffn.fc1.weight" in message
    assert "unexpected: encoder.layers.0.self_attn.extra_proj.weight" in message


def test_unsupported_release_settings_are_named(tmp_path: Path) -> None:
    source = load_upstream("tera_tiny")
    transformer = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "intermediate_size": 64, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
                   "share_layer": False, "pre_layer_norm": True}
    path = tmp_path / "pre_ln.ckpt"
    state = _s3prl_transformer_state(source)
    torch.save({"Transformer": state, "Config": {"transformer": transformer}}, path)
    with pytest.raises(ConfigError, match="pre_layer_norm=True"):
        load_upstream(str(path))
