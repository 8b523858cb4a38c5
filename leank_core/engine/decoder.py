"""The pieces of a Hugging Face decoder the engine calls itself, instead of the model's forward.

The engine runs the model's own modules one by one — embeddings, each layer's
``input_layernorm``, q/k/v projections (with their biases, e.g. Qwen2's), the model's
rotary embedding and its architecture's rotate-half application, ``o_proj``,
``post_attention_layernorm`` and ``mlp``, the final norm and ``lm_head`` — so the numbers
are the model's, while the code around them has no Python-side state, no host sync and
no shape that changes between decode steps (what a CUDA graph needs). Attention itself is
the caller's: the engine's kernels over its own storage.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from leank_core.adapters import adapter_for


class Decoder:
    """The modules of one supported causal LM (Llama, Qwen2, Mistral) and the shape numbers they imply."""

    def __init__(self, model: PreTrainedModel) -> None:
        adapter = adapter_for(model)
        base = model.base_model
        self.embed, self.layers, self.norm, self.rotary = base.embed_tokens, base.layers, base.norm, base.rotary_emb
        self.lm_head = model.get_output_embeddings()
        self.heads, self.kv_heads, self.head_dim = adapter.num_heads, adapter.num_kv_heads, adapter.head_dim
        # The architecture's own RoPE application (rotate-half), from the module that defines its attention.
        self.apply_rope: Callable = sys.modules[type(self.layers[0].self_attn).__module__].apply_rotary_pos_emb

    def embed_and_rope(self, ids: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Hidden states ``[B, T, hidden]`` of ``ids`` ``[B, T]`` and the rotary ``(cos, sin)`` at ``positions``."""
        x = self.embed(ids)
        return x, self.rotary(x, positions)

    def qkv(self, layer: torch.nn.Module, x: torch.Tensor, rope: tuple) -> tuple[torch.Tensor, ...]:
        """Post-RoPE ``q`` ``[B, H, T, D]`` and ``k``, ``v`` ``[B, H_kv, T, D]`` of one layer for ``x`` ``[B, T, hidden]``."""
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        shape = (*x.shape[:2], -1, self.head_dim)
        q = attn.q_proj(h).view(shape).transpose(1, 2)
        k = attn.k_proj(h).view(shape).transpose(1, 2)
        v = attn.v_proj(h).view(shape).transpose(1, 2)
        q, k = self.apply_rope(q, k, *rope)
        return q, k, v

    def finish(self, layer: torch.nn.Module, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The layer's output for input ``x`` given its attention result ``attended`` ``[B, T, H * D]``."""
        x = x + layer.self_attn.o_proj(attended)
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """float32 next-token logits for final hidden states ``x`` ``[B, hidden]``."""
        return self.lm_head(self.norm(x)).float()
