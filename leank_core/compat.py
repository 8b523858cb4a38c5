"""The transformers 5.x differences LeanK meets, handled in one place.

* The cache keyword of ``forward``/``generate`` was renamed (``past_key_values`` → ``cache``)
  in 5.2x; both versions take the cache as the fourth positional argument of the base
  model's ``forward`` (input_ids, attention_mask, position_ids, cache).
* Multimodal configs nest the language model's config (``get_text_config``); LeanK only
  ever reads the text config.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache


def text_config(config_or_model: Any) -> Any:
    """The language-model config of a model or config (itself for text-only models)."""
    config = getattr(config_or_model, "config", config_or_model)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def cache_kwargs(model: PreTrainedModel, cache: Cache) -> dict[str, Cache]:
    """``generate``/forward keyword for a cache: ``cache`` from transformers 5.2x on, ``past_key_values`` before."""
    name = "cache" if "cache" in inspect.signature(model.base_model.forward).parameters else "past_key_values"
    return {name: cache}


def forward_with_cache(module: torch.nn.Module, input_ids: torch.Tensor, cache: Cache) -> Any:
    """Call a base model with a KV cache on every supported 5.x version (positional cache)."""
    return module(input_ids, None, None, cache, use_cache=True)
