"""The in-graph sampler draws from softmax(logits / T), restricted to transformers' top-p nucleus."""

from __future__ import annotations

import torch
from transformers.generation.logits_process import TopPLogitsWarper

from leank_core.engine.sampling import Sampler, SamplingMode, top_p_filter


def test_draws_follow_the_tempered_softmax():
    torch.manual_seed(0)
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    sampler = Sampler(torch.device("cpu"))
    mode = sampler.configure(True, 1.5, None)
    draws = sampler(logits.expand(40_000, -1), mode)
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(freq, (logits / 1.5).softmax(-1), atol=0.01, rtol=0)


def test_top_p_keeps_the_same_nucleus_as_transformers():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(6, 50, generator=g) * 3
    for p in (0.1, 0.5, 0.9, 1.0):
        expected = TopPLogitsWarper(p)(None, scores.clone())
        torch.testing.assert_close(top_p_filter(scores, torch.tensor(p)), expected)


def test_sampling_outside_the_nucleus_never_happens_and_greedy_is_argmax():
    torch.manual_seed(2)
    logits = torch.tensor([3.0, 2.9, -5.0, -5.0])
    sampler = Sampler(torch.device("cpu"))
    mode = sampler.configure(True, 1.0, 0.9)
    assert mode == SamplingMode(True, True)
    assert set(sampler(logits.expand(2000, -1), mode).tolist()) == {0, 1}
    greedy = sampler.configure(False, 1.0, None)
    assert sampler(logits[None], greedy).tolist() == [0]
