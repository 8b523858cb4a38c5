"""Next-token choice inside the decode step: greedy, or temperature / top-p sampling without a host sync.

Sampling uses the exponential race (Gumbel-max in another form): ``argmax(p / E)`` with
``E ~ Exp(1)`` i.i.d. picks token ``i`` with probability ``p_i``. It needs one random draw
per logit and an argmax — no ``multinomial`` (which synchronises) — and PyTorch's Philox
generator is replay-safe inside CUDA graphs. Temperature and top-p live in device tensors,
so one captured graph serves every value; only whether top-p filtering runs at all is
part of the graph's shape (:class:`SamplingMode`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SamplingMode(NamedTuple):
    """What a captured step computes: argmax, or a random draw (with or without top-p filtering)."""

    do_sample: bool = False
    top_p: bool = False

    @classmethod
    def of(cls, do_sample: bool, top_p: float | None) -> "SamplingMode":
        return cls(do_sample, do_sample and top_p is not None)


class Sampler:
    """Chooses next tokens from float32 logits ``[B, V]`` (see module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.temperature = torch.ones((), device=device)
        self.top_p = torch.ones((), device=device)

    def configure(self, do_sample: bool, temperature: float, top_p: float | None) -> SamplingMode:
        """Set the values the next steps use; the mode selects the graph."""
        if do_sample and temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature.fill_(temperature)
        self.top_p.fill_(1.0 if top_p is None else top_p)
        return SamplingMode.of(do_sample, top_p)

    def __call__(self, logits: torch.Tensor, mode: SamplingMode) -> torch.Tensor:
        if not mode.do_sample:
            return logits.argmax(-1)
        scores = logits / self.temperature
        if mode.top_p:
            scores = top_p_filter(scores, self.top_p)
        probs = scores.softmax(-1)
        return (probs / torch.empty_like(probs).exponential_()).argmax(-1)


def top_p_filter(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """``-inf`` outside the nucleus: the smallest set of top tokens whose probability reaches ``top_p``
    (as transformers' ``TopPLogitsWarper``; the most likely token always stays)."""
    ascending, order = scores.sort(-1)
    cumulative = ascending.softmax(-1).cumsum(-1)
    drop = cumulative <= 1 - top_p
    drop[..., -1] = False
    return scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
