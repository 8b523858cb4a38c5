"""Stacking a layer's q/k/v (or gate/up) projections into one matmul changes no number and adds no memory."""

from __future__ import annotations

import pytest
import torch

from leank_core.engine.stacked_linear import StackedLinear
from tests.conftest import tiny_model


def projections(model, index: int = 0) -> list[torch.nn.Linear]:
    attn = model.model.layers[index].self_attn
    return [attn.q_proj, attn.k_proj, attn.v_proj]


@pytest.mark.parametrize("arch", ["llama", "qwen2"], ids=["no bias", "q/k/v bias"])
def test_outputs_equal_the_separate_projections_whose_weights_become_views_of_the_stack(arch):
    model = tiny_model(arch)
    linears = projections(model)
    x = torch.randn(3, 5, model.config.hidden_size)
    expected = [lin(x) for lin in linears]
    before = [lin.weight.detach().clone() for lin in linears]
    stacked = StackedLinear(linears)
    for got, want in zip(stacked(x), expected):
        torch.testing.assert_close(got, want)
    assert stacked.weight.shape[0] == sum(lin.out_features for lin in linears)
    for lin, weight in zip(linears, before):
        assert torch.equal(lin.weight, weight)
        assert lin.weight.untyped_storage().data_ptr() == stacked.weight.untyped_storage().data_ptr()
    assert (stacked.bias is None) == (arch == "llama")


def test_stacking_again_reuses_the_stack_instead_of_copying_the_weights():
    """A second engine on the same model must not leave the first one's stacked copy behind."""
    linears = projections(tiny_model())
    first = StackedLinear(linears)
    second = StackedLinear(linears)
    assert second.weight.data_ptr() == first.weight.data_ptr() and torch.equal(second.weight, first.weight)


def test_projections_of_different_input_sizes_or_mixed_bias_are_refused():
    with pytest.raises(ValueError, match="one input size, all with or all without bias"):
        StackedLinear([torch.nn.Linear(4, 2), torch.nn.Linear(4, 2, bias=False)])
    with pytest.raises(ValueError, match="one input size"):
        StackedLinear([torch.nn.Linear(4, 2), torch.nn.Linear(3, 2)])

