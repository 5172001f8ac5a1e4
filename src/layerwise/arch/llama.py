"""transformers Llama / Qwen2 / Mistral naming; also the project's controlled triplet.

``model.layers[i]`` with ``input_layernorm``, ``self_attn.{q,k,v,o}_proj``, ``post_attention_layernorm``,
``mlp.{gate,up,down}_proj``; blocks return a tensor; the default transformers forward. Native in
transformers: no remote code, no load-time patches.
"""

from __future__ import annotations

from .base import Architecture, LayerAdapter

#: role -> path of the Linears in a Llama-named block, in execution order
LLAMA_LINEARS: dict[str, str] = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
}

ADAPTER = LayerAdapter(
    name="llama", blocks="model.layers", embed="model.embed_tokens", final_norm="model.norm",
    lm_head="lm_head", attn_input="input_layernorm", mlp_input="post_attention_layernorm",
    linears=LLAMA_LINEARS,
)

ARCHITECTURE = Architecture(
    adapter=ADAPTER,
    model_types=("llama", "qwen2", "mistral"),
    class_names=("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"),
    name_hints=("llama", "qwen2", "mistral"),
)
