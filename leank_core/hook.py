"""The ``"leank"`` attention hook: how a model's attention is routed to LeanK, and the verbs for it.

One attention function is registered in transformers' ``AttentionInterface`` as ``"leank"``;
every supported decoder calls it with post-RoPE queries and keys. It hands the call to the
:class:`AttentionMode` active for the current forward pass, or to the model's ordinary SDPA
when none is (e.g. a model with the hook but run without a mask). Modes become active two ways:

* a ``LeanKCache`` passed to ``forward``/``generate``: a forward pre-hook on the base model
  finds it among the arguments and makes it the mode for that call (the cache attends over
  its own [sink | compact middle | recent] storage);
* ``leank_core.attention.masked_attention(...)``: training and reference forwards.

The verbs (one each):

* :func:`apply` — check that a mask belongs to a model and install the hook, permanently;
* :func:`applied` — the same for a ``with`` block: on exit the model is as it was before;
* :func:`install` — the hook alone, no mask involved (training freezes a model and installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from leank_core.adapters import architecture_of
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash

ATTN_IMPLEMENTATION = "leank"
_HANDLES = "_leank_hook_handles"  # attribute on the base model: the forward hooks install() added


class AttentionMode:
    """Something that computes attention itself while it is active (a cache, a training semantics)."""

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        """Attention output ``[B, T, H, D]`` for ``query`` ``[B, H, T, D]`` and this call's ``key``/``value``."""
        raise NotImplementedError


_ACTIVE: ContextVar[AttentionMode | None] = ContextVar("leank_attention_mode", default=None)


@contextmanager
def active_mode(mode: AttentionMode) -> Iterator[AttentionMode]:
    """Within this context every ``"leank"`` attention call goes to ``mode``."""
    token = _ACTIVE.set(mode)
    try:
        yield mode
    finally:
        _ACTIVE.reset(token)


def leank_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The ``"leank"`` entry in transformers' AttentionInterface (see module docstring)."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    mode = _ACTIVE.get()
    if mode is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    return mode.attend(module, query, key, value, attention_mask, scaling), None


# What each forward pass in flight (innermost last) must undo when it ends: per thread / task, like _ACTIVE.
_UNDO: ContextVar[tuple[Token | None, ...]] = ContextVar("leank_attention_mode_undo", default=())


def _activate_mode_argument(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: an AttentionMode among the arguments (a LeanKCache) becomes the mode."""
    mode = next((a for a in (*args, *kwargs.values()) if isinstance(a, AttentionMode)), None)
    _UNDO.set((*_UNDO.get(), None if mode is None else _ACTIVE.set(mode)))


def _restore_mode(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
    *outer, token = _UNDO.get()
    _UNDO.set(tuple(outer))
    if token is not None:
        _ACTIVE.reset(token)


def install(model: PreTrainedModel) -> PreTrainedModel:
    """Route the model's attention through the LeanK hook (idempotent; permanent)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, leank_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    base = model.base_model
    if not getattr(base, _HANDLES, None):
        setattr(base, _HANDLES, (
            base.register_forward_pre_hook(_activate_mode_argument, with_kwargs=True),
            base.register_forward_hook(_restore_mode, with_kwargs=True, always_call=True),
        ))
    return model


def _uninstall(model: PreTrainedModel, attn_implementation: str | None) -> None:
    for handle in getattr(model.base_model, _HANDLES, None) or ():
        handle.remove()
    setattr(model.base_model, _HANDLES, None)
    model.set_attn_implementation(attn_implementation or "sdpa")


def check_mask_shape(mask: LeanKMask, config_or_model: Any) -> tuple[int, int, int]:
    """The model's ``[layers, kv_heads, head_dim]``; a one-line error if ``mask`` has another shape."""
    shape = architecture_of(config_or_model).mask_shape
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match this model's [layers, kv_heads, head_dim] {shape}: "
                         "it was learned for another architecture")
    return shape


def check_mask(model: PreTrainedModel, mask: LeanKMask, allow_hash_mismatch: bool = False) -> None:
    """One-line ValueError unless ``mask`` was learned for exactly this model (shape and weights' hash)."""
    check_mask_shape(mask, model)
    if not allow_hash_mismatch:
        actual = model_hash(model)
        if mask.model_hash != actual:
            raise ValueError(f"mask was learned for model hash {mask.model_hash[:16] or '(none)'}, this model is "
                             f"{actual[:16]}; pass allow_hash_mismatch=True only if you know the weights are equivalent")


def apply(model: PreTrainedModel, mask: LeanKMask, allow_hash_mismatch: bool = False) -> PreTrainedModel:
    """Check that ``mask`` belongs to ``model`` and install the LeanK attention hook for good.

    Afterwards ``model.generate(..., **cache_kwargs(model, LeanKCache(mask, model.config)))``
    decodes with the mask; without a LeanKCache the model computes exactly what it did before.
    """
    check_mask(model, mask, allow_hash_mismatch)
    return install(model)


@contextmanager
def applied(model: PreTrainedModel, mask: LeanKMask, allow_hash_mismatch: bool = False) -> Iterator[PreTrainedModel]:
    """:func:`apply` for the duration of a ``with`` block; afterwards the model is as before
    (its attention implementation restored, the hooks removed), for users who also run it without LeanK."""
    check_mask(model, mask, allow_hash_mismatch)
    previous = model.config._attn_implementation
    had_hook = bool(getattr(model.base_model, _HANDLES, None))
    install(model)
    try:
        yield model
    finally:
        if not had_hook:
            _uninstall(model, previous)
