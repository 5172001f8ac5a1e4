"""Tiny stand-ins with LLaDA's and Dream's module names, output types and transformers-4 quirks.

The real 8B models load only with hub access, so the adapters are tested on these look-alikes:

- :class:`LLaDALikeLM` mirrors ``modeling_llada.py`` (``LLaDAModelLM`` -> ``model`` (``LLaDAModel``) ->
  ``transformer`` ModuleDict with ``wte``, ``blocks[i]`` (``attn_norm``, ``q_proj``, ``k_proj``,
  ``v_proj``, ``attn_out``, ``ff_norm``, ``ff_proj``, ``up_proj``, ``ff_out``), ``ln_f``, ``ff_out``);
  blocks return ``(x, cache)``; a 2D padding mask makes the attention causal (LLaDA's code adds its
  causal bias whenever the mask has zeros); ``forward`` reads ``config.use_cache`` which the config
  lacks; ``tie_weights()`` takes no arguments and ``__init__`` never calls ``post_init()``.
- :class:`DreamLikeModel` mirrors ``modeling_dream.py`` (``model.layers[i].self_attn.{q,k,v,o}_proj``,
  ``mlp.{gate,up,down}_proj``; decoder layers return a tuple; the attention takes a 4D bool mask or
  None; every rotary embedding looks up ``ROPE_INIT_FUNCTIONS["default"]``, gone in transformers 5;
  ``_tied_weights_keys`` is a list; ``from_pretrained`` reads ``generation_config.json`` into a
  generation config whose ``validate(is_init=False)`` predates transformers 5's arguments).

Their configs carry the real ``model_type`` ("llada", "Dream"), so a saved look-alike is detected as
the architecture it mirrors (:func:`layerwise.arch.detect_architecture`).

Their math equals transformers' ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` with ``is_causal=False``,
so :func:`llada_like_from_llama` and :func:`dream_like_from_qwen2` copy weights across and tests can
assert equal numbers through the adapters. Shapes: ``x [B, T, d]``, logits ``[B, T, V]``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast, MaskedLMOutput


class _RMSNorm(nn.Module):
    """Llama/LLaDA RMSNorm: normalise in float32, cast back, then scale."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def _rope(q: torch.Tensor, k: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE on ``q, k [B, H, T, hd]`` at positions 0..T-1 (Llama's half-rotation convention)."""
    pos = torch.arange(q.shape[-2], device=q.device, dtype=torch.float32)
    freqs = torch.outer(pos, inv_freq.float().to(q.device))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _split_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int,
                 n_kv: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q [B, T, H*hd]``, ``k, v [B, T, Hkv*hd]`` -> ``[B, H, T, hd]``, ``[B, Hkv, T, hd]`` x2."""
    B, T, _ = q.shape
    hd = q.shape[-1] // n_heads
    q = q.view(B, T, n_heads, hd).transpose(1, 2)
    k = k.view(B, T, n_kv, hd).transpose(1, 2)
    v = v.view(B, T, n_kv, hd).transpose(1, 2)
    return q, k, v


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Bidirectional attention (GQA by repeating kv heads, as transformers' repeat_kv); ``mask`` bool
    ``[B, 1, T, T]`` (True = attend) or float additive, or None -> ``[B, T, H*hd]``."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False, scale=1 / math.sqrt(q.shape[-1]))
    B, H, T, hd = out.shape
    return out.transpose(1, 2).reshape(B, T, H * hd)


def _inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


# ---------------------------------------------------------------------------------------------
# LLaDA look-alike
# ---------------------------------------------------------------------------------------------


class LLaDALikeConfig(PretrainedConfig):
    """LLaDA's config names (``d_model``, ``n_heads``, ``n_layers``, ``mlp_hidden_size``...); like
    ``LLaDAConfig`` it has no ``use_cache``."""

    model_type = "llada"

    def __init__(self, vocab_size: int = 64, d_model: int = 32, n_heads: int = 4, n_kv_heads: int | None = None,
                 n_layers: int = 2, mlp_hidden_size: int = 64, rope_theta: float = 10000.0,
                 rms_norm_eps: float = 1e-6, weight_tying: bool = False, block_group_size: int = 1,
                 **kwargs: Any) -> None:
        self.vocab_size, self.d_model, self.n_heads = vocab_size, d_model, n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.n_layers, self.mlp_hidden_size = n_layers, mlp_hidden_size
        self.rope_theta, self.rms_norm_eps = rope_theta, rms_norm_eps
        self.weight_tying, self.block_group_size = weight_tying, block_group_size
        super().__init__(**kwargs)


class LLaDALikeBlock(nn.Module):
    """``LLaDALlamaBlock``: pre-norm attention + SwiGLU MLP; returns ``(x, cache)``."""

    def __init__(self, layer_id: int, cfg: LLaDALikeConfig) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_heads, self.n_kv = cfg.n_heads, cfg.n_kv_heads
        d, hd = cfg.d_model, cfg.d_model // cfg.n_heads
        self.attn_norm = _RMSNorm(d, cfg.rms_norm_eps)
        self.ff_norm = _RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(cfg.mlp_hidden_size, d, bias=False)
        # like LLaDA's RotaryEmbedding (a plain-dict cache, no buffer): built on use, so loading on
        # the meta device cannot leave it uninitialised
        self.head_dim, self.rope_theta = hd, cfg.rope_theta

    def forward(self, x: torch.Tensor, attention_bias: torch.Tensor | None = None,
                layer_past: Any = None, use_cache: bool = False) -> tuple[torch.Tensor, None]:
        h = self.attn_norm(x)
        q, k, v = _split_heads(self.q_proj(h), self.k_proj(h), self.v_proj(h), self.n_heads, self.n_kv)
        q, k = _rope(q, k, _inv_freq(self.head_dim, self.rope_theta))
        x = x + self.attn_out(_sdpa(q, k, v, attention_bias))
        h = self.ff_norm(x)
        x = x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))
        return x, None


class LLaDALikeModel(nn.Module):
    """``LLaDAModel``: ``transformer`` ModuleDict; blocks under ``block_groups`` when grouped."""

    def __init__(self, cfg: LLaDALikeConfig) -> None:
        super().__init__()
        self.config = cfg
        blocks = [LLaDALikeBlock(i, cfg) for i in range(cfg.n_layers)]
        parts: dict[str, nn.Module] = {"wte": nn.Embedding(cfg.vocab_size, cfg.d_model),
                                       "ln_f": _RMSNorm(cfg.d_model, cfg.rms_norm_eps)}
        if cfg.block_group_size > 1:
            g = cfg.block_group_size
            parts["block_groups"] = nn.ModuleList(nn.ModuleList(blocks[i:i + g]) for i in range(0, len(blocks), g))
        else:
            parts["blocks"] = nn.ModuleList(blocks)
        if not cfg.weight_tying:
            parts["ff_out"] = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.transformer = nn.ModuleDict(parts)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                attention_bias: torch.Tensor | None = None) -> torch.Tensor:
        tr: Any = self.transformer
        x = tr.wte(input_ids)
        T = input_ids.shape[1]
        if attention_bias is None and attention_mask is not None and bool((attention_mask == 0).any()):
            # LLaDA's quirk: a padding mask brings in its causal bias
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            attention_bias = causal[None, None] & attention_mask.bool()[:, None, None, :]
        blocks = tr["blocks"] if "blocks" in tr else [b for grp in tr["block_groups"] for b in grp]
        for blk in blocks:
            x, _ = blk(x, attention_bias=attention_bias)
        x = tr.ln_f(x)
        if self.config.weight_tying:
            return F.linear(x, tr.wte.weight)
        return tr.ff_out(x)


class LLaDALikeLM(PreTrainedModel):
    """``LLaDAModelLM`` with its transformers-4 habits (see module docstring)."""

    config_class = LLaDALikeConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDALikeBlock"]

    def __init__(self, config: LLaDALikeConfig, init_params: bool = True) -> None:
        super().__init__(config)
        self.model = LLaDALikeModel(config)  # like LLaDA: no self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                attention_bias: torch.Tensor | None = None, use_cache: bool | None = None,
                **_: Any) -> CausalLMOutputWithPast:
        if use_cache is None:
            use_cache = self.config.use_cache  # LLaDAConfig has no use_cache: AttributeError unless patched
        logits = self.model(input_ids, attention_mask=attention_mask, attention_bias=attention_bias)
        return CausalLMOutputWithPast(logits=logits)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.transformer.wte

    def tie_weights(self):  # noqa: D102 - LLaDA's signature: no arguments
        if self.config.weight_tying:
            self.model.transformer.ff_out = self.model.transformer.wte


def llada_like_from_llama(llama: nn.Module, *, block_group_size: int = 1) -> LLaDALikeLM:
    """A :class:`LLaDALikeLM` with a transformers ``LlamaForCausalLM``'s weights (same math when the
    Llama has ``is_causal=False``, no biases, default RoPE)."""
    c: Any = llama.config
    cfg = LLaDALikeConfig(vocab_size=c.vocab_size, d_model=c.hidden_size, n_heads=c.num_attention_heads,
                          n_kv_heads=c.num_key_value_heads, n_layers=c.num_hidden_layers,
                          mlp_hidden_size=c.intermediate_size, rope_theta=float(c.rope_parameters["rope_theta"]),
                          rms_norm_eps=c.rms_norm_eps, block_group_size=block_group_size)
    out: Any = LLaDALikeLM(cfg)
    out = out.to(next(llama.parameters()).dtype)
    src: Any = llama.model
    names = {"attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm",
             "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
             "attn_out": "self_attn.o_proj", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
             "ff_out": "mlp.down_proj"}
    t = out.model.transformer
    blocks = t["blocks"] if "blocks" in t else [b for grp in t["block_groups"] for b in grp]
    with torch.no_grad():
        t.wte.weight.copy_(src.embed_tokens.weight)
        t.ln_f.weight.copy_(src.norm.weight)
        t.ff_out.weight.copy_(llama.get_submodule("lm_head").weight)
        for blk, layer in zip(blocks, src.layers):
            for mine, theirs in names.items():
                getattr(blk, mine).weight.copy_(layer.get_submodule(theirs).weight)
    return out.eval()


# ---------------------------------------------------------------------------------------------
# Dream look-alike
# ---------------------------------------------------------------------------------------------


class DreamLikeConfig(PretrainedConfig):
    """Dream's config names (Qwen2's), with ``rope_theta`` as a plain attribute as in transformers 4."""

    model_type = "Dream"

    def __init__(self, vocab_size: int = 64, hidden_size: int = 32, intermediate_size: int = 64,
                 num_hidden_layers: int = 2, num_attention_heads: int = 4, num_key_value_heads: int = 2,
                 rope_theta: float = 10000.0, rms_norm_eps: float = 1e-6, tie_word_embeddings: bool = False,
                 **kwargs: Any) -> None:
        self.vocab_size, self.hidden_size, self.intermediate_size = vocab_size, hidden_size, intermediate_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.num_key_value_heads, self.rope_theta, self.rms_norm_eps = num_key_value_heads, rope_theta, rms_norm_eps
        kwargs["tie_word_embeddings"] = tie_word_embeddings
        super().__init__(**kwargs)


class DreamLikeRotary(nn.Module):
    """Dream's rotary embedding: asks ``ROPE_INIT_FUNCTIONS["default"]`` (KeyError in transformers 5)."""

    inv_freq: torch.Tensor

    def __init__(self, config: DreamLikeConfig) -> None:
        super().__init__()
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        inv_freq, self.attention_scaling = ROPE_INIT_FUNCTIONS["default"](config, None)
        self.register_buffer("inv_freq", inv_freq, persistent=False)


class DreamLikeAttention(nn.Module):
    def __init__(self, config: DreamLikeConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv = config.num_attention_heads, config.num_key_value_heads
        d, hd = config.hidden_size, config.hidden_size // config.num_attention_heads
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=True)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        self.rotary_emb = DreamLikeRotary(config)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is not None and (attention_mask.dim() != 4 or attention_mask.dtype != torch.bool):
            raise ValueError("Dream's attention takes a 4D bool mask [B, 1, T, T] or None")
        q, k, v = _split_heads(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.n_heads, self.n_kv)
        q, k = _rope(q, k, self.rotary_emb.inv_freq)
        return self.o_proj(_sdpa(q, k, v, attention_mask))


class DreamLikeMLP(nn.Module):
    def __init__(self, config: DreamLikeConfig) -> None:
        super().__init__()
        d, m = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, m, bias=False)
        self.up_proj = nn.Linear(d, m, bias=False)
        self.down_proj = nn.Linear(m, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DreamLikeLayer(nn.Module):
    """``DreamDecoderLayer``: returns ``(hidden,)`` (plus attentions / cache when asked)."""

    def __init__(self, config: DreamLikeConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = DreamLikeAttention(config, layer_idx)
        self.mlp = DreamLikeMLP(config)
        self.input_layernorm = _RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = _RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: Any) -> tuple[torch.Tensor]:
        h = hidden_states + self.self_attn(self.input_layernorm(hidden_states), attention_mask)
        return (h + self.mlp(self.post_attention_layernorm(h)),)


class DreamLikeBase(nn.Module):
    def __init__(self, config: DreamLikeConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DreamLikeLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = _RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = DreamLikeRotary(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed_tokens(input_ids)
        for layer in self.layers:
            h = layer(h, attention_mask=attention_mask)[0]
        return self.norm(h)


class DreamLikeGenerationConfig(GenerationConfig):
    """``DreamGenerationConfig``: its ``validate`` has transformers 4's signature, so transformers 5's
    ``validate(user_set_attributes=...)`` (in ``from_dict``) raises TypeError unless patched."""

    def validate(self, is_init: bool = False) -> None:  # type: ignore[override]
        pass


class DreamLikeModel(PreTrainedModel):
    """``DreamModel``: ``model`` (base) + ``lm_head``; logits are shifted (position i -> token i+1)."""

    config_class = DreamLikeConfig
    base_model_prefix = "model"
    _no_split_modules = ["DreamLikeLayer"]
    _tied_weights_keys = ["lm_head.weight"]  # type: ignore[assignment]  # transformers 4's list (see Dream)

    def __init__(self, config: DreamLikeConfig) -> None:
        super().__init__(config)
        self.model = DreamLikeBase(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    @classmethod
    def from_pretrained(cls, path: Any, *args: Any, **kwargs: Any) -> DreamLikeModel:  # type: ignore[override]
        """Like Dream's: the loaded model's generation config is read again as its own class."""
        model = super().from_pretrained(path, *args, **kwargs)
        if (Path(path) / "generation_config.json").is_file():
            model.generation_config = DreamLikeGenerationConfig.from_pretrained(path)
        return model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> MaskedLMOutput:
        return MaskedLMOutput(logits=self.lm_head(self.model(input_ids, attention_mask)))


def dream_like_from_qwen2(qwen2: nn.Module) -> DreamLikeModel:
    """A :class:`DreamLikeModel` with a transformers ``Qwen2ForCausalLM``'s weights (same names).
    Needs :func:`layerwise.arch.dream.patch_rope_default` first (as Dream does on transformers 5)."""
    c: Any = qwen2.config
    cfg = DreamLikeConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                          num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                          num_key_value_heads=c.num_key_value_heads, rope_theta=float(c.rope_parameters["rope_theta"]),
                          rms_norm_eps=c.rms_norm_eps)
    out: Any = DreamLikeModel(cfg)
    out = out.to(next(qwen2.parameters()).dtype)
    missing, unexpected = out.load_state_dict(qwen2.state_dict(), strict=False)
    if missing or unexpected:
        raise ValueError(f"weight names differ: missing {missing}, unexpected {unexpected}")
    return out.eval()
