"""LeanKEngine: batched generation over static LeanK storage, one CUDA graph per decode step.

Usage::

    engine = LeanKEngine(model, mask, max_batch=8, max_len=32768)   # mask=None: the dense twin
    new_tokens = engine.generate(input_ids, attention_mask, max_new_tokens=64)   # one tensor per sequence

``generate`` prefills each prompt eagerly (dense attention over the prompt, chunked; see
``prefill.py``) straight into the engine's storage (``storage.py``), then decodes: every
step runs the whole model for one token per sequence (``decode_step.py``), chooses the next
tokens (``sampling.py``), marks sequences that produced an end-of-sequence token and
advances the positions — all on the device, replayed from a CUDA graph per batch bucket
(``graphs.py``); on CPU the same step runs eagerly with the reference kernels. The host only
replays the graph, copies each step's tokens into the output and, every few steps, asks
whether every sequence has finished.

With ``mask=None`` the engine is its own dense baseline: the same storage, kernels, loop
and graphs with every channel of every head kept, i.e. an ordinary dense K/V cache.
Prompts may be left-padded (each sequence's first real token is its position 0, as in
``generate`` with an attention mask); a finished sequence emits ``pad_token_id`` while the
others continue, and is returned up to and including its end-of-sequence token.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from leank_core.hook import check_mask_shape
from leank_core.adapters import architecture_of
from leank_core.engine.decode_step import decode_logits
from leank_core.engine.decoder import Decoder
from leank_core.engine.graphs import StepGraphs
from leank_core.engine.prefill import prefill_sequence
from leank_core.engine.sampling import Sampler, SamplingMode
from leank_core.engine.storage import EngineCache
from leank_core.mask import LeanKMask

DENSE_WINDOW = (0, 128)  # sink, recent of the dense twin; with every channel kept any window is dense attention
MAX_STOP_TOKENS = 8  # end-of-sequence ids one call may name
STOP_CHECK_EVERY = 16  # decode steps between the host's "all finished?" reads (each one waits for the GPU)
PREFILL_CHUNK = 8192


class LeanKEngine:
    """Static-buffer, graph-replayed decoding of ``model`` with a LeanK ``mask`` (or dense, ``mask=None``)."""

    def __init__(self, model: PreTrainedModel, mask: LeanKMask | None = None, max_batch: int = 8,
                 max_len: int = 8192, prefill_chunk: int = PREFILL_CHUNK) -> None:
        shape = architecture_of(model).mask_shape
        if mask is not None:
            check_mask_shape(mask, model)
        if max_batch < 1 or max_len < 2 or prefill_chunk < 1:
            raise ValueError(f"need max_batch >= 1, max_len >= 2 and prefill_chunk >= 1, got {max_batch}, {max_len}, "
                             f"{prefill_chunk}")
        self.mask, self.prefill_chunk = mask, prefill_chunk
        self.generation_config = model.generation_config
        device, dtype = model.device, model.dtype
        layer_masks = mask.kept if mask is not None else torch.ones(shape, dtype=torch.bool)
        sink, recent = (mask.sink, mask.recent) if mask is not None else DENSE_WINDOW
        self.decoder = Decoder(model)
        self.cache = EngineCache(layer_masks, sink, recent, max_batch, max_len, dtype, device)
        self.sampler = Sampler(device)
        self.tokens = torch.zeros(max_batch, dtype=torch.int64, device=device)  # each row's latest, not yet stored
        self.done = torch.ones(max_batch, dtype=torch.bool, device=device)
        self.stop_ids = torch.full((MAX_STOP_TOKENS,), -1, dtype=torch.int64, device=device)
        self.pad_id = torch.zeros((), dtype=torch.int64, device=device)
        self.graphs = StepGraphs(self._step, max_batch, device)

    # -- the captured step ----------------------------------------------------------------
    def _step(self, bucket: int, mode: SamplingMode) -> None:
        """Feed rows ``0 .. bucket-1`` their latest token; their next one replaces it (see module docstring)."""
        logits = decode_logits(self.decoder, self.cache, self.tokens[:bucket])
        done = self.done[:bucket]
        chosen = torch.where(done, self.pad_id, self.sampler(logits, mode))
        done |= self._is_stop(chosen)
        self.tokens[:bucket] = chosen
        self.cache.n[:bucket] += 1

    def _is_stop(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens[:, None] == self.stop_ids).any(-1)

    # -- public API -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 32,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float | None = None,
                 eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None) -> list[torch.Tensor]:
        """New tokens of each sequence of the (left-padded) batch ``input_ids`` ``[B, T]``: up to
        ``max_new_tokens`` each, ending with its end-of-sequence token if it produced one.
        ``eos_token_id``/``pad_token_id`` default to the model's generation config."""
        prompts = _unpadded(input_ids.to(self.cache.n.device), attention_mask)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self._check_fits(len(prompts), max(p.numel() for p in prompts) + max_new_tokens, max_new_tokens)
        mode = self.sampler.configure(do_sample, temperature, top_p)
        self.prepare(len(prompts), do_sample, top_p)
        logits = torch.stack([prefill_sequence(self.decoder, self.cache, row, ids, self.prefill_chunk)
                              for row, ids in enumerate(prompts)])
        self.cache.set_lengths(torch.tensor([p.numel() for p in prompts]))
        first = self.sampler(logits, mode)
        rest = self.decode(first, max_new_tokens - 1, do_sample, temperature, top_p, eos_token_id, pad_token_id)
        tokens = torch.cat([first[:, None], rest], 1).cpu()
        stop = set(self._stop_tokens(eos_token_id))
        return [_through_first(row, stop) for row in tokens]

    @torch.no_grad()
    def prepare(self, batch: int, do_sample: bool = False, top_p: float | None = None) -> SamplingMode:
        """Capture the decode graph for ``batch`` sequences and this sampling mode if it is not captured yet.

        Capturing runs the step for real, so it overwrites the rows the engine holds:
        ``generate`` calls this before it stores prompts; callers of :meth:`decode` on
        sequences they stored themselves call it before storing them.
        """
        mode = SamplingMode.of(do_sample, top_p)
        bucket = self.graphs.bucket(batch)
        if not self.graphs.captured(bucket, mode):
            self.cache.n[:bucket] = 0  # the warm-up steps then write positions that exist
            self.done[:bucket] = True
            self.graphs.capture(bucket, mode)
        return mode

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
               top_p: float | None = None, eos_token_id: int | list[int] | None = None,
               pad_token_id: int | None = None) -> torch.Tensor:
        """Continue the sequences in rows ``0 .. B-1``: feed each its latest token ``tokens`` ``[B]`` (not stored
        yet) and return ``[B, T]`` new tokens, ``T <= max_new_tokens`` (fewer once every sequence has finished;
        a finished sequence's later tokens are the pad id). Needs :meth:`prepare` for this batch and mode."""
        batch = tokens.shape[0]
        self._check_fits(batch, int(self.cache.n[:batch].max()) + max_new_tokens, max_new_tokens)
        mode = self.sampler.configure(do_sample, temperature, top_p)
        bucket = self.graphs.bucket(batch)
        if not self.graphs.captured(bucket, mode):
            raise RuntimeError(f"no decode graph for batch {batch} and {mode}: call prepare() before storing the "
                               "sequences (capturing overwrites them)")
        stops = self._stop_tokens(eos_token_id)
        self.stop_ids.fill_(-1)
        self.stop_ids[: len(stops)] = torch.tensor(stops, dtype=torch.int64)
        self.pad_id.fill_(self._pad_token(pad_token_id, stops))
        self.tokens[:batch] = tokens
        self.done[:batch] = self._is_stop(self.tokens[:batch])
        self.tokens[batch:bucket], self.done[batch:bucket], self.cache.n[batch:bucket] = 0, True, 0
        out = tokens.new_empty(batch, max_new_tokens)
        for t in range(max_new_tokens):
            self.graphs.run(bucket, mode)
            out[:, t] = self.tokens[:batch]
            if stops and (t + 1) % STOP_CHECK_EVERY == 0 and bool(self.done[:batch].all()):
                return out[:, : t + 1]
        return out

    # -- helpers ----------------------------------------------------------------------------
    def _check_fits(self, batch: int, tokens: int, max_new_tokens: int) -> None:
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if batch > self.cache.max_batch or tokens > self.cache.max_len:
            raise ValueError(f"{batch} sequences reaching {tokens} tokens do not fit this engine (max_batch="
                             f"{self.cache.max_batch}, max_len={self.cache.max_len}): build it with larger limits")

    def _stop_tokens(self, eos_token_id: int | list[int] | None) -> list[int]:
        ids = self.generation_config.eos_token_id if eos_token_id is None else eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if len(ids) > MAX_STOP_TOKENS:
            raise ValueError(f"at most {MAX_STOP_TOKENS} end-of-sequence ids, got {len(ids)}")
        return ids

    def _pad_token(self, pad_token_id: int | None, stops: list[int]) -> int:
        for candidate in (pad_token_id, self.generation_config.pad_token_id, *stops):
            if candidate is not None:
                return candidate
        return 0


def _unpadded(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
    """Each row's tokens without its left padding; a one-line error for any other padding."""
    if attention_mask is None:
        return list(input_ids)
    keep = attention_mask.to(input_ids.device).bool()
    pads = (~keep).sum(-1)
    width = input_ids.shape[1]
    starts_ok = keep.int().argmax(-1) == pads
    if bool((pads == width).any() | ~starts_ok.all()):
        raise ValueError("LeanKEngine needs left-padded prompts with at least one token each: "
                         "set tokenizer.padding_side = 'left'")
    return [row[p:] for row, p in zip(input_ids, pads.tolist())]


def _through_first(tokens: torch.Tensor, stop: set[int]) -> torch.Tensor:
    """``tokens`` up to and including the first stop token."""
    for i, t in enumerate(tokens.tolist()):
        if t in stop:
            return tokens[: i + 1]
    return tokens
