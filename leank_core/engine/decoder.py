"""The pieces of a Hugging Face decoder the engine runs itself, instead of the model's forward.

The engine uses the model's own modules and weights — embeddings, each layer's q/k/v
projections (with their biases, e.g. Qwen2's), ``o_proj``, the MLP's projections, the norms'
weights and epsilons, the model's rotary embedding module for ``cos``/``sin``, the final norm
and ``lm_head`` — so the numbers are the model's, while the code around them keeps no
Python-side state, never waits for the GPU and has no shape that changes between decode steps
(what a CUDA graph needs).

Prompt prefill and decode share two fusions: each layer's q/k/v projections run as one
matmul, and so do the MLP's gate/up projections (``stacked_linear.py``: the modules' weights
become views of one stacked tensor), whose output goes through one SiLU-gate kernel
(``leank_core/kernels/activation_jit.py``). A decode step also does the residual adds +
RMSNorms and the rotate-half RoPE through fused kernels with the same arithmetic
(``norm_rope_jit.py``), because at decode batch sizes launching a dozen tiny kernels per norm
costs more than the work. Attention itself is the caller's: the engine's kernels over its own
storage.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from transformers import PreTrainedModel

from leank_core.adapters import architecture_of
from leank_core.engine.stacked_linear import StackedLinear
from leank_core.kernels import silu_mul

MLP_PARTS = ("gate_proj", "up_proj", "down_proj")  # the gated MLP of Llama, Qwen2 and Mistral
SILU = ("silu", "swish")  # their activation (``hidden_act``), which ``silu_mul`` computes


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
        gated = all(hasattr(layer.mlp, part) for layer in self.layers for part in MLP_PARTS)
        if not gated or getattr(model.config, "hidden_act", None) not in SILU:
            raise ValueError(f"{type(self.layers[0].mlp).__name__} with hidden_act={model.config.hidden_act!r} is not "
                             "the SiLU-gated MLP (down_proj(silu(gate_proj(x)) * up_proj(x))) the engine computes")
        self.qkv_proj = [StackedLinear([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj])
                         for layer in self.layers]
        self.gate_up_proj = [StackedLinear([layer.mlp.gate_proj, layer.mlp.up_proj]) for layer in self.layers]

    @staticmethod
    def norm_args(norm: torch.nn.Module) -> tuple[torch.Tensor, float]:
        """``(weight, eps)`` of an RMSNorm, for ``leank_core.kernels.residual_rms_norm``."""
        return norm.weight, norm.variance_epsilon

    def embed_and_rope(self, ids: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Hidden states ``[B, T, hidden]`` of ``ids`` ``[B, T]`` and the rotary ``(cos, sin)`` ``[B, T, D]`` at
        ``positions`` ``[B, T]``."""
        x = self.embed(ids)
        return x, self.rotary(x, positions)

    def project_qkv(self, index: int, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Layer ``index``'s pre-RoPE ``q`` ``[..., H, D]``, ``k`` and ``v`` ``[..., H_kv, D]`` of normed ``h``
        ``[..., hidden]`` (views of one matmul's output)."""
        return tuple(part.unflatten(-1, (-1, self.head_dim)) for part in self.qkv_proj[index](h))

    def mlp(self, index: int, h: torch.Tensor) -> torch.Tensor:
        """Layer ``index``'s MLP output for normed ``h`` ``[..., hidden]``."""
        return self.layers[index].mlp.down_proj(silu_mul(self.gate_up_proj[index].stacked(h)))

    def qkv(self, index: int, x: torch.Tensor, rope: tuple) -> tuple[torch.Tensor, ...]:
        """Post-RoPE ``q`` ``[B, H, T, D]`` and ``k``, ``v`` ``[B, H_kv, T, D]`` of layer ``index`` for ``x``
        ``[B, T, hidden]``."""
        q, k, v = (t.transpose(1, 2) for t in self.project_qkv(index, self.layers[index].input_layernorm(x)))
        q, k = self.apply_rope(q, k, *rope)
        return q, k, v

    def finish(self, index: int, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Layer ``index``'s output for input ``x`` given its attention result ``attended`` ``[B, T, H * D]``."""
        layer = self.layers[index]
        x = x + layer.self_attn.o_proj(attended)
        return x + self.mlp(index, layer.post_attention_layernorm(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """float32 next-token logits for final hidden states ``x`` ``[B, hidden]``."""
        return self.lm_head(self.norm(x)).float()
