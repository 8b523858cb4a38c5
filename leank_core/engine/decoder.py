"""The pieces of a Hugging Face decoder the engine runs itself, instead of the model's forward.

The engine uses the model's own modules and weights — embeddings, each layer's q/k/v
projections (with their biases, e.g. Qwen2's), ``o_proj`` and ``mlp``, the norms' weights and
epsilons, the model's rotary embedding module for ``cos``/``sin``, the final norm and
``lm_head`` — so the numbers are the model's, while the code around them keeps no Python-side
state, never waits for the GPU and has no shape that changes between decode steps (what a
CUDA graph needs). Prompt prefill calls the modules as they are; a decode step does the
residual adds + RMSNorms and the rotate-half RoPE through fused kernels with the same
arithmetic (``leank_core/kernels/norm_rope_jit.py``), because at decode batch sizes launching
a dozen tiny kernels per norm costs more than the work. Attention itself is the caller's: the
engine's kernels over its own storage.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from leank_core.adapters import architecture_of


class Decoder:
    """The modules of one supported causal LM (Llama, Qwen2, Mistral) and the shape numbers they imply."""

    def __init__(self, model: PreTrainedModel) -> None:
        architecture = architecture_of(model)
        base = model.base_model
        self.embed, self.layers, self.norm, self.rotary = base.embed_tokens, base.layers, base.norm, base.rotary_emb
        self.lm_head = model.get_output_embeddings()
        self.heads, self.kv_heads, self.head_dim = architecture.num_heads, architecture.num_kv_heads, architecture.head_dim
        # The architecture's own RoPE application (rotate-half), from the module that defines its attention.
        self.apply_rope: Callable = sys.modules[type(self.layers[0].self_attn).__module__].apply_rotary_pos_emb
        norms = [self.norm] + [n for layer in self.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
        if not all(hasattr(n, "variance_epsilon") and n.weight.dtype == model.dtype for n in norms):
            raise ValueError(f"{type(self.norm).__name__} is not the Llama-family RMSNorm (weight * x / rms(x), in the "
                             "model's dtype) that the engine's fused decode step computes")

    @staticmethod
    def norm_args(norm: torch.nn.Module) -> tuple[torch.Tensor, float]:
        """``(weight, eps)`` of an RMSNorm, for ``leank_core.kernels.residual_rms_norm``."""
        return norm.weight, norm.variance_epsilon

    def embed_and_rope(self, ids: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Hidden states ``[B, T, hidden]`` of ``ids`` ``[B, T]`` and the rotary ``(cos, sin)`` ``[B, T, D]`` at
        ``positions`` ``[B, T]``."""
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
