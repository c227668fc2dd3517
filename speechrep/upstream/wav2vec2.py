"""wav2vec 2.0 (Baevski et al., 2020, https://arxiv.org/abs/2006.11477): a strided CNN over the waveform, a
linear projection and a Transformer with convolutional positions. HuBERT, WavLM, data2vec and DistilHuBERT
share this encoder (their files reuse `Wav2Vec2Config` with their own defaults); the pre-training objectives
differ.

Where we deliberately differ from Hugging Face on padded batches: group norm in the first conv layer ("base"
models) takes its statistics over the valid frames only, and data2vec's stacked positional convs re-zero
padded frames between layers, so a padded batch equals each utterance run alone; HF mixes padding into both
(it is exact only for unpadded input there). For unpadded input and for the layer-norm models the two agree.

Hidden states follow transformers >= 5 and fairseq's layer results: index 0 is the first layer's input (after
the encoder layer norm in post-LN models), then each layer's output; in pre-LN models the final layer norm is
not applied to the last one (`encode` returns the normed output separately). transformers 4.x applied it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from speechrep.errors import AudioError, ConfigError
from speechrep.nn.conv_encoder import ConvFeatureEncoder, conv_receptive_field
from speechrep.nn.transformer import TransformerEncoder, check_identity_attention, check_layer_sizes
from speechrep.upstream.base import FrameGeometry, UpstreamOutput, padding_mask
from speechrep.upstream.registry import register_family, register_upstream

BASE_CONV: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
TINY_CONV: tuple[tuple[int, int, int], ...] = ((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2


@dataclass(frozen=True)
class Wav2Vec2Config:
    """Architecture of a wav2vec 2.0-style encoder (also HuBERT, WavLM, data2vec, DistilHuBERT)."""

    conv_layers: tuple[tuple[int, int, int], ...] = BASE_CONV  # (channels, kernel, stride) per layer
    conv_norm: str = "group"  # "group": GroupNorm on the first conv only; "layer": LayerNorm after every conv
    conv_bias: bool = False
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int | tuple[int, ...] = 12  # one value for every layer, or one per layer (0: no attention)
    ffn_size: int | tuple[int, ...] = 3072  # likewise (0: no feed-forward block)
    head_dim: int = 0  # 0: hidden_size // num_heads; set it when pruned heads keep their width
    # 0-based layers whose attention is the identity map, folded into one linear (compress.skip); their
    # num_heads entry is ignored
    identity_attention: tuple[int, ...] = ()
    layer_norm_first: bool = False  # pre-LN ("large", lv60) instead of post-LN layers
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    pos_conv_depth: int = 1  # > 1: data2vec's stack of narrow positional convs
    rel_pos_buckets: int = 0  # > 0: WavLM's gated relative position bias with this many buckets
    rel_pos_max_distance: int = 800
    feature_projection_norm: bool = True  # LayerNorm on conv features before the projection
    normalize_waveform: bool = False  # zero-mean unit-variance per utterance, as the original expects
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    feature_dropout: float = 0.0
    layer_drop: float = 0.0

    def __post_init__(self) -> None:
        if self.conv_norm not in ("group", "layer"):
            raise ConfigError(f"conv_norm must be 'group' or 'layer', got {self.conv_norm!r}")
        try:
            check_layer_sizes(self.hidden_size, self.num_layers, self.num_heads, self.ffn_size, self.head_dim)
            identity = check_identity_attention(self.identity_attention, self.num_layers)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        object.__setattr__(self, "identity_attention", identity)  # sorted ints, also from a JSON list


def config_from_dict(config_class: type, values: Mapping[str, Any]) -> Any:
    """Build a frozen config dataclass from JSON-like values; unknown keys raise ConfigError."""
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {config_class.__name__} keys: {', '.join(unknown)}")
    cleaned = dict(values)
    if "conv_layers" in cleaned:
        cleaned["conv_layers"] = tuple(tuple(int(v) for v in layer) for layer in cleaned["conv_layers"])
    return config_class(**cleaned)


class _FeatureProjection(nn.Module):
    """Optional LayerNorm on conv features → linear to the model width → dropout."""

    def __init__(self, in_dim: int, dim: int, norm: bool, dropout: float, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, eps=eps) if norm else None
        self.linear = nn.Linear(in_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) → (B, T, D)."""
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(self.linear(x))


def normalize_waveforms(wavs: Tensor, wav_lens: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance over each utterance's valid samples (fairseq's `normalize`); padding is 0."""
    valid = padding_mask(wav_lens, wavs.shape[1]).to(wavs.dtype)
    count = valid.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (wavs * valid).sum(-1, keepdim=True) / count
    var = ((wavs - mean).square() * valid).sum(-1, keepdim=True) / count
    return (wavs - mean) * torch.rsqrt(var + eps) * valid


@register_family
class Wav2Vec2(nn.Module):
    """wav2vec 2.0 encoder (Upstream contract): each transformer layer's input and the last output."""

    family = "wav2vec2"
    config_class = Wav2Vec2Config

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.config = config
        self.sample_rate = 16000
        self.receptive_field, self.stride = conv_receptive_field(config.conv_layers)
        self.hidden_sizes = [config.hidden_size] * (config.num_layers + 1)
        # pre-training only: the mask embedding and the pre-LN final norm (hidden states stop before it)
        self.pretraining_only_parameters = (
            ("mask_emb", "encoder.norm") if config.layer_norm_first else ("mask_emb",)
        )
        self.feature_encoder = ConvFeatureEncoder(config.conv_layers, config.conv_norm, config.conv_bias)
        self.feature_projection = _FeatureProjection(
            self.feature_encoder.out_channels,
            config.hidden_size,
            config.feature_projection_norm,
            config.feature_dropout,
            config.layer_norm_eps,
        )
        self.mask_emb = nn.Parameter(torch.empty(config.hidden_size).uniform_())
        self.encoder = TransformerEncoder(
            config.hidden_size,
            config.num_layers,
            config.num_heads,
            config.ffn_size,
            config.layer_norm_first,
            config.pos_conv_kernel,
            config.pos_conv_groups,
            config.pos_conv_depth,
            config.rel_pos_buckets,
            config.rel_pos_max_distance,
            config.dropout,
            config.attention_dropout,
            config.activation_dropout,
            config.layer_drop,
            config.layer_norm_eps,
            config.head_dim or None,
            config.identity_attention,
        )

    @property
    def frame_geometry(self) -> FrameGeometry:
        """An unpadded conv stack; the "group" norm (over time) and waveform normalisation are not local."""
        local = self.config.conv_norm == "layer" and not self.config.normalize_waveform
        return FrameGeometry(self.receptive_field, self.stride, frame_local=local)

    def conv_features(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) waveforms → ((B, T', C) CNN features before projection, (B,) valid frames)."""
        wav_lens = wav_lens.to(wavs.device)
        if wavs.shape[0] and int(wav_lens.min()) < self.receptive_field:
            raise AudioError(
                f"an utterance has {int(wav_lens.min())} samples, fewer than the {self.receptive_field} one "
                f"{self.family} frame needs"
            )
        if self.config.normalize_waveform:
            wavs = normalize_waveforms(wavs, wav_lens)
        return self.feature_encoder(wavs, wav_lens)

    def extract_features(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) waveforms → ((B, T', D) projected features that enter the encoder, (B,) valid frames)."""
        feats, lengths = self.conv_features(wavs, wav_lens)
        return self.feature_projection(feats), lengths

    def encode(
        self, feats: Tensor, lengths: Tensor, mask_time_indices: Tensor | None = None,
        attentions: list[Tensor] | None = None,
    ) -> tuple[list[Tensor], Tensor]:
        """Projected features → (hidden states of all layers, final output); masked frames get `mask_emb`.

        `attentions` (a list) receives each layer's attention probabilities."""
        if mask_time_indices is not None:
            feats = torch.where(mask_time_indices[..., None], self.mask_emb.to(feats.dtype), feats)
        valid = padding_mask(lengths, feats.shape[1]) if bool((lengths < feats.shape[1]).any()) else None
        return self.encoder(feats, valid, attentions)

    def forward(self, wavs: Tensor, wav_lens: Tensor, output_attentions: bool = False) -> UpstreamOutput:
        """(B, T) float waveforms at 16 kHz, (B,) lengths → every layer's hidden states and valid frames
        (and, with `output_attentions`, each layer's (B, H, T', T') attention probabilities)."""
        feats, lengths = self.extract_features(wavs, wav_lens)
        attentions: list[Tensor] | None = [] if output_attentions else None
        hidden_states, _ = self.encode(feats, lengths, attentions=attentions)
        return UpstreamOutput(hidden_states=hidden_states, lengths=lengths, attentions=attentions)


# --- checkpoint-key conversion ---

_HF_RULES: list[tuple[str, str]] = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_encoder.layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_encoder.layers.\1.norm."),
    (r"^feature_projection\.layer_norm\.", "feature_projection.norm."),
    (r"^feature_projection\.projection\.", "feature_projection.linear."),
    (r"^masked_spec_embed$", "mask_emb"),
    (
        r"^encoder\.pos_conv_embed\.conv\.(weight_g|parametrizations\.weight\.original0)$",
        "encoder.pos_conv.layers.0.conv.parametrizations.weight.original0",
    ),
    (
        r"^encoder\.pos_conv_embed\.conv\.(weight_v|parametrizations\.weight\.original1)$",
        "encoder.pos_conv.layers.0.conv.parametrizations.weight.original1",
    ),
    (r"^encoder\.pos_conv_embed\.conv\.bias$", "encoder.pos_conv.layers.0.conv.bias"),
    (r"^encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.", r"encoder.pos_conv.layers.\1.conv."),
    (r"^encoder\.layer_norm\.", "encoder.norm."),
    (r"^encoder\.layers\.0\.attention\.rel_attn_embed\.", "encoder.rel_pos_embed."),
    (
        r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.",
        r"encoder.layers.\1.attention.gate_linear.",
    ),
    (r"^encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const$", r"encoder.layers.\1.attention.gate_const"),
    (r"^encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.", r"encoder.layers.\1.attention.\2_proj."),
    (r"^encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.attention_norm."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.ffn.fc1."),
    (r"^encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.ffn.fc2."),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.layers.\1.ffn_norm."),
]
# heads of HF task/pre-training models, not part of the upstream
_HF_IGNORED = re.compile(
    r"^(quantizer|project_q|project_hid|lm_head|projector|classifier|layer_weights|adapter"
    r"|tdnn|feature_extractor_dropout|label_embeddings_concat|final_proj|dropout_features)"
)
_HF_PREFIX = re.compile(r"^(wav2vec2|hubert|wavlm|data2vec_audio)\.")

_FAIRSEQ_RULES: list[tuple[str, str]] = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_encoder.layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.", r"feature_encoder.layers.\1.norm."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.", r"feature_encoder.layers.\1.norm."),
    (r"^layer_norm\.", "feature_projection.norm."),
    (r"^post_extract_proj\.", "feature_projection.linear."),
    (r"^mask_emb$", "mask_emb"),
    (r"^encoder\.pos_conv\.0\.weight_g$", "encoder.pos_conv.layers.0.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv\.0\.weight_v$", "encoder.pos_conv.layers.0.conv.parametrizations.weight.original1"),
    (r"^encoder\.pos_conv\.0\.bias$", "encoder.pos_conv.layers.0.conv.bias"),
    (r"^encoder\.pos_conv\.(\d+)\.0\.", r"encoder.pos_conv.layers.\1.conv."),
    (r"^encoder\.layer_norm\.", "encoder.norm."),
    (r"^encoder\.layers\.0\.self_attn\.relative_attention_bias\.", "encoder.rel_pos_embed."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_linear\.", r"encoder.layers.\1.attention.gate_linear."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_a$", r"encoder.layers.\1.attention.gate_const"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.", r"encoder.layers.\1.attention.\2_proj."),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.layers.\1.attention_norm."),
    (r"^encoder\.layers\.(\d+)\.fc1\.", r"encoder.layers.\1.ffn.fc1."),
    (r"^encoder\.layers\.(\d+)\.fc2\.", r"encoder.layers.\1.ffn.fc2."),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.", r"encoder.layers.\1.ffn_norm."),
]
# pre-training-only parts of fairseq models (quantizer, targets, EMA teacher, prediction heads)
_FAIRSEQ_IGNORED = re.compile(
    r"^(quantizer|project_q|project_inp|final_proj|label_embs_concat|target_glu|_ema"
    r"|ema\.|label_embs)"
)


def _rename(
    state: Mapping[str, Tensor], rules: list[tuple[str, str]], ignored: re.Pattern
) -> dict[str, Tensor]:
    """Apply the first matching rename rule to each key; drop ignored keys; keep the rest (reported later)."""
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if ignored.match(key):
            continue
        for pattern, target in compiled:
            if pattern.match(key):
                key = pattern.sub(target, key, count=1)
                break
        out[key] = value
    return out


def convert_hf_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face Wav2Vec2/Hubert/WavLM/Data2VecAudio(Model|ForCTC|...) keys → ours."""
    stripped = {_HF_PREFIX.sub("", key, count=1): value for key, value in state.items()}
    return _rename(stripped, _HF_RULES, _HF_IGNORED)


def convert_fairseq_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """fairseq wav2vec 2.0 / HuBERT / data2vec audio (and WavLM's own release) keys → ours."""
    return _rename(state, _FAIRSEQ_RULES, _FAIRSEQ_IGNORED)


def config_from_hf(
    hf: Mapping[str, Any], base: Wav2Vec2Config, do_normalize: bool | None = None
) -> Wav2Vec2Config:
    """Map a Hugging Face config.json (wav2vec2, hubert, wavlm, data2vec-audio) onto our config."""
    model_type = hf.get("model_type", "wav2vec2")
    for key in ("hidden_act", "feat_extract_activation"):
        if hf.get(key, "gelu") != "gelu":
            raise ConfigError(f"config.json: {key}={hf[key]!r} is not supported (only 'gelu')")
    if hf.get("conv_pos_batch_norm", False):
        raise ConfigError("config.json: conv_pos_batch_norm=true is not supported")
    conv = tuple(
        zip(
            hf.get("conv_dim", [512] * 7),
            hf.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2]),
            hf.get("conv_stride", [5, 2, 2, 2, 2, 2, 2]),
        )
    )
    is_data2vec = model_type == "data2vec-audio"
    values: dict[str, Any] = dict(
        conv_layers=tuple(tuple(int(v) for v in layer) for layer in conv),
        conv_norm="layer" if is_data2vec else hf.get("feat_extract_norm", "group"),
        conv_bias=bool(hf.get("conv_bias", False)),
        hidden_size=hf.get("hidden_size", 768),
        num_layers=hf.get("num_hidden_layers", 12),
        num_heads=hf.get("num_attention_heads", 12),
        ffn_size=hf.get("intermediate_size", 3072),
        layer_norm_first=False if is_data2vec else bool(hf.get("do_stable_layer_norm", False)),
        pos_conv_groups=hf.get("num_conv_pos_embedding_groups", 16),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        dropout=hf.get("hidden_dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.1),
        activation_dropout=hf.get("activation_dropout", 0.0),
        feature_dropout=hf.get("feat_proj_dropout", 0.0),
        layer_drop=hf.get("layerdrop", 0.0),
        feature_projection_norm=bool(hf.get("feat_proj_layer_norm", True)),
    )
    if is_data2vec:
        values.update(
            pos_conv_kernel=hf.get("conv_pos_kernel_size", 19),
            pos_conv_depth=hf.get("num_conv_pos_embeddings", 5),
        )
    else:
        values.update(pos_conv_kernel=hf.get("num_conv_pos_embeddings", 128), pos_conv_depth=1)
    if model_type == "wavlm":
        values.update(
            rel_pos_buckets=hf.get("num_buckets", 320),
            rel_pos_max_distance=hf.get("max_bucket_distance", 800),
        )
    if do_normalize is not None:
        values["normalize_waveform"] = do_normalize
    else:
        # no preprocessor_config.json: follow the original recipes (normalised input for layer-norm models)
        values["normalize_waveform"] = values["conv_norm"] == "layer"
    return replace(base, **values)


def parse_conv_spec(text: str) -> tuple[tuple[int, int, int], ...]:
    """fairseq's conv_feature_layers string, e.g. "[(512,10,5)] + [(512,3,2)] * 4", parsed without eval."""
    import ast

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [evaluate(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = evaluate(node.left), evaluate(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ConfigError(f"conv_feature_layers: unsupported expression {ast.dump(node)[:60]}")

    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        raise ConfigError(f"conv_feature_layers: cannot parse {text!r}") from error
    layers = evaluate(tree)
    if not isinstance(layers, list) or not all(
        isinstance(layer, tuple) and len(layer) == 3 for layer in layers
    ):
        raise ConfigError(f"conv_feature_layers: expected a list of (dim, kernel, stride), got {text!r}")
    return tuple(tuple(int(v) for v in layer) for layer in layers)


def config_from_fairseq(
    model_cfg: Mapping[str, Any], base: Wav2Vec2Config, normalize: bool
) -> Wav2Vec2Config:
    """Map a fairseq (or WavLM) model config onto ours; missing fields take fairseq's defaults."""
    activation = model_cfg.get("activation_fn", "gelu")
    if activation != "gelu":
        raise ConfigError(f"fairseq config: activation_fn={activation!r} is not supported (only 'gelu')")
    extractor = str(model_cfg.get("extractor_mode", "default"))
    conv_pos = int(model_cfg.get("conv_pos", 128))
    depth = int(model_cfg.get("pos_conv_depth", 1) or 1)
    values: dict[str, Any] = dict(
        conv_layers=parse_conv_spec(
            str(
                model_cfg.get(
                    "conv_feature_layers", "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
                )
            )
        ),
        conv_norm="layer" if extractor == "layer_norm" else "group",
        conv_bias=bool(model_cfg.get("conv_bias", False)),
        hidden_size=int(model_cfg.get("encoder_embed_dim", 768)),
        num_layers=int(model_cfg.get("encoder_layers", 12)),
        num_heads=int(model_cfg.get("encoder_attention_heads", 12)),
        ffn_size=int(model_cfg.get("encoder_ffn_embed_dim", 3072)),
        layer_norm_first=bool(model_cfg.get("layer_norm_first", False)),
        pos_conv_kernel=conv_pos if depth == 1 else max(3, conv_pos // depth),
        pos_conv_groups=int(model_cfg.get("conv_pos_groups", 16)),
        pos_conv_depth=depth,
        dropout=float(model_cfg.get("dropout", 0.1)),
        attention_dropout=float(model_cfg.get("attention_dropout", 0.1)),
        activation_dropout=float(model_cfg.get("activation_dropout", 0.0)),
        feature_dropout=float(model_cfg.get("dropout_input", 0.0)),
        layer_drop=float(model_cfg.get("encoder_layerdrop", 0.0)),
        normalize_waveform=normalize,
    )
    if model_cfg.get("relative_position_embedding", False):
        if not model_cfg.get("gru_rel_pos", True):
            raise ConfigError("WavLM config: gru_rel_pos=False (ungated relative bias) is not supported")
        values.update(
            rel_pos_buckets=int(model_cfg.get("num_buckets", 320)),
            rel_pos_max_distance=int(model_cfg.get("max_distance", 800)),
        )
    return replace(base, **values)


# --- registered configurations ---

LARGE = dict(hidden_size=1024, num_layers=24, num_heads=16, ffn_size=4096)
LARGE_LN_FIRST = dict(
    LARGE, conv_norm="layer", conv_bias=True, layer_norm_first=True, normalize_waveform=True
)
TINY = dict(
    conv_layers=TINY_CONV,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    ffn_size=64,
    pos_conv_kernel=16,
    pos_conv_groups=4,
)


@register_upstream("wav2vec2_base")
def wav2vec2_base(**overrides: Any) -> Wav2Vec2:
    """wav2vec 2.0 Base: 12 post-LN layers, width 768, group-norm CNN, raw waveform input."""
    return Wav2Vec2(replace(Wav2Vec2Config(), **overrides))


@register_upstream("wav2vec2_large")
def wav2vec2_large(**overrides: Any) -> Wav2Vec2:
    """wav2vec 2.0 Large (lv60): 24 layer-norm-first layers, width 1024, layer-norm CNN, normalised input."""
    return Wav2Vec2(replace(Wav2Vec2Config(**LARGE_LN_FIRST), **overrides))


@register_upstream("wav2vec2_tiny")
def wav2vec2_tiny(**overrides: Any) -> Wav2Vec2:
    """A 2-layer, width-32 wav2vec 2.0 for tests."""
    return Wav2Vec2(replace(Wav2Vec2Config(**TINY), **overrides))


@register_upstream("wav2vec2_tiny_ln_first")
def wav2vec2_tiny_ln_first(**overrides: Any) -> Wav2Vec2:
    """A 2-layer, width-32 layer-norm-first wav2vec 2.0 for tests."""
    config = Wav2Vec2Config(
        **dict(TINY, conv_norm="layer", conv_bias=True, layer_norm_first=True, normalize_waveform=True)
    )
    return Wav2Vec2(replace(config, **overrides))
