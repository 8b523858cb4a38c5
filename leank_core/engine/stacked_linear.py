"""Several ``nn.Linear`` layers over the same input, run as one matmul over their stacked weights.

At decode batch sizes a projection is a read of its weight. One read of the stacked q/k/v
(or gate/up) weight runs closer to the memory bandwidth than two or three narrow matmuls:
for the narrow ones (Llama-3.1-8B's 1024-row k/v projections at batch 8) cuBLAS picks
split-K kernels plus a separate reduction, which read their weights at about a third of the
bandwidth on the H200 (``benchmarks/results/engine_step_profile.txt`` as of commit e46fe03;
the stacked shapes: ``benchmarks/results/decode_gemm.log``). This is the fusion serving
engines make when they load a model.

The stacked tensor is the modules' own storage: each module's weight (and bias) becomes a
view of its row block, so no memory is added, the values are unchanged and the modules work
as before (the model's own forward, ``save_pretrained``, which clones such disjoint views
when it saves). Stacking layers whose weights are already consecutive views of one tensor
(a second engine on the same model) reuses that tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _stacked(params: list[torch.Tensor]) -> torch.Tensor:
    """One tensor whose consecutive row blocks are ``params``; the parameters are re-pointed to views of it."""
    if _consecutive(params):
        first = params[0].data
        rows = sum(p.shape[0] for p in params)
        return first.new_empty(0).set_(first.untyped_storage(), first.storage_offset(), (rows, *first.shape[1:]))
    stacked = torch.cat([p.data for p in params])
    start = 0
    for p in params:
        p.data = stacked[start : start + p.shape[0]]
        start += p.shape[0]
    return stacked


def _consecutive(params: list[torch.Tensor]) -> bool:
    """Whether ``params`` are contiguous, one after another in one storage (stacked before)."""
    storage, ptr = params[0].untyped_storage().data_ptr(), params[0].data_ptr()
    for p in params:
        if not p.is_contiguous() or p.untyped_storage().data_ptr() != storage or p.data_ptr() != ptr:
            return False
        ptr += p.numel() * p.element_size()
    return True


class StackedLinear:
    """``linears`` (same input size, all with or all without bias) as one matmul; outputs split back per layer."""

    def __init__(self, linears: list[nn.Linear]) -> None:
        with_bias = {lin.bias is not None for lin in linears}
        if len(with_bias) != 1 or len({lin.in_features for lin in linears}) != 1:
            raise ValueError("StackedLinear needs projections of one input size, all with or all without bias")
        self.sizes = [lin.out_features for lin in linears]
        self.weight = _stacked([lin.weight for lin in linears])
        self.bias = _stacked([lin.bias for lin in linears]) if with_bias == {True} else None

    def stacked(self, x: torch.Tensor) -> torch.Tensor:
        """The layers' outputs for ``x`` ``[..., in_features]`` side by side: ``[..., sum(out_features)]``."""
        return F.linear(x, self.weight, self.bias)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each layer's output for ``x``, as views of :meth:`stacked`'s result."""
        return self.stacked(x).split(self.sizes, -1)
