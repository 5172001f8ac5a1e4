"""GPT-NeoX / Pythia (transformers ``gpt_neox``): fused qkv, no gate, parallel residual.

The head is ``lm_head`` in transformers 5 (it was ``embed_out`` in 4.x; checkpoints are renamed on
load). Native in transformers: no remote code, no load-time patches.
"""

from __future__ import annotations

from .base import Architecture, LayerAdapter

ADAPTER = LayerAdapter(
    name="gpt_neox", blocks="gpt_neox.layers", embed="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm", lm_head="lm_head",
    attn_input="input_layernorm", mlp_input="post_attention_layernorm",
    linears={"qkv": "attention.query_key_value", "o": "attention.dense",
             "up": "mlp.dense_h_to_4h", "down": "mlp.dense_4h_to_h"},
    attn_layer_idx="attention.layer_idx",
)

ARCHITECTURE = Architecture(
    adapter=ADAPTER,
    model_types=("gpt_neox",),
    class_names=("GPTNeoXForCausalLM",),
    name_hints=("gpt_neox", "gptneox", "pythia"),
)
