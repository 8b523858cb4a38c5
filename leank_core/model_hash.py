"""A content hash that identifies a model's weights, so a mask is never applied to another model.

What the digest covers (and nothing else):

* the architecture fields that decide attention shapes and positions (``ARCH_FIELDS``
  below, read from the text config; missing fields hash as null);
* every parameter, in sorted name order (tied parameters once, under their first name):
  its name, its shape, and its values in canonical form (integer and bool tensors: their
  own bytes).

The canonical form of a float is ``bf16(fp16(bf16(x)))``: round to bfloat16, then to float16
(subnormals and overflow to ±inf included), then back to bfloat16. Why: the same checkpoint
is loaded in different dtypes (bf16 on a GPU, fp32 on a CPU, fp16 on older GPUs), and every
load of one checkpoint must hash the same. With this form

* a checkpoint **stored in bf16 or fp16** (nearly every released LLM) hashes the same loaded
  in fp16, bf16, fp32 or fp64: the loads differ only where fp16 cannot hold a bf16 value
  (magnitudes below 2^-14, which fp16 keeps as subnormals, and above 65504, which become
  ±inf), and the form rounds every load to exactly what fp16 keeps of the value;
* a checkpoint **stored in fp32** (and a dequantised GGUF) hashes the same loaded in bf16,
  fp32 or fp64, but an fp16 load of it hashes differently: fp32→fp16→bf16 double rounding
  differs from fp32→bf16 for a few percent of the values. No per-value form can fix that:
  values just above and just below a bf16 midpoint round apart in bf16 but together in
  fp16, so a form equal on both kinds of load would have to merge neighbouring bf16 values
  and, chained, nearly everything. Load such checkpoints in bf16 or fp32.

A real weight change (any fine-tune) flips many canonical values; only edits below bf16
resolution in every weight (or among tiny / huge values fp16 cannot tell apart) go unseen.

Not covered: buffers (e.g. RoPE ``inv_freq``, derived from the config), the dtype the
model happened to be loaded in, the device, the attention implementation, tokenizer files.

Speed: tensors are streamed in chunks (a GPU tensor is copied to the host one chunk at a
time, never whole) and hashed per tensor on a thread pool; hashlib releases the GIL, so an
8B model hashes at memory/sha256 speed across cores.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from leank_core.compat import text_config

HASH_VERSION = "leank-model-hash-v3"
CHUNK_ELEMS = 1 << 24  # 64 MiB of float32 per chunk
IN_FLIGHT = 8  # tensors hashed concurrently (and held) at once

ARCH_FIELDS = (
    "model_type",
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "rope_theta",
    "rope_scaling",
    "tie_word_embeddings",
    "attention_bias",
    "sliding_window",
    "use_sliding_window",
)


def model_hash(model: torch.nn.Module) -> str:
    """Digest of ``model``'s architecture config and weights (see module docstring)."""
    return hash_weights(model.config, model.named_parameters())


def hash_weights(config: Any, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Same digest from any stream of named tensors (e.g. gathered ZeRO-3 partitions).

    The stream is consumed with at most ``IN_FLIGHT`` tensors held at once (their digests are
    combined in name order at the end), so a caller that gathers a partitioned model one
    tensor at a time never holds the whole model.
    """
    digests: dict[str, bytes] = {}
    pending: deque[tuple[str, Future[bytes]]] = deque()
    with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        for name, tensor in named_tensors:
            pending.append((name, pool.submit(_tensor_digest, name, tensor)))
            if len(pending) == IN_FLIGHT:
                done, future = pending.popleft()
                digests[done] = future.result()
        digests.update((name, future.result()) for name, future in pending)
    top = hashlib.sha256()
    top.update(HASH_VERSION.encode())
    top.update(json.dumps(architecture_fields(config), sort_keys=True, default=str).encode())
    for name in sorted(digests):
        top.update(digests[name])
    return top.hexdigest()


def architecture_fields(config: Any) -> dict[str, Any]:
    text = text_config(config)
    out = {}
    for name in ARCH_FIELDS:
        value = getattr(text, name, None)
        out[name] = value.to_dict() if hasattr(value, "to_dict") else value
    return out


def _tensor_digest(name: str, t: torch.Tensor) -> bytes:
    h = hashlib.sha256()
    h.update(name.encode())
    h.update(json.dumps(list(t.shape)).encode())
    flat = t.detach().reshape(-1)
    for start in range(0, flat.numel(), CHUNK_ELEMS):
        chunk = flat[start : start + CHUNK_ELEMS]
        if chunk.is_floating_point():  # the canonical form (module docstring); numpy has no bf16: hash bits
            chunk = chunk.to(torch.bfloat16).to(torch.float16).to(torch.bfloat16).view(torch.int16)
        elif chunk.dtype == torch.bool:
            chunk = chunk.to(torch.uint8)
        h.update(chunk.cpu().contiguous().numpy())
    return h.digest()
