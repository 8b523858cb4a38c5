"""Training: teacher = dense attention, student = LeanK semantics, gradients only into α."""

from __future__ import annotations

import pytest
import torch

from leank_core.hook import install
from leank_core.training import (
    Importance,
    TrainConfig,
    compute_loss,
    continuation_hidden,
    freeze,
    learn_mask,
    prefill,
    schedule,
    split_sample,
)
from leank_core.model_hash import model_hash
from tests.conftest import tiny_model

SINK, RECENT = 4, 8


def sample(n_prompt=48, n_answer=5, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, 259, (n_prompt,), generator=g).tolist(),
        "answer_ids": torch.randint(0, 259, (n_answer,), generator=g).tolist(),
    }


@pytest.fixture
def model():
    return install(freeze(tiny_model("llama")))


def test_teacher_pass_equals_the_plain_forward_of_the_whole_sequence(model):
    s = sample()
    context, answer_in = split_sample(s["input_ids"], s["answer_ids"], torch.device("cpu"))
    h = continuation_hidden(model, prefill(model, context), answer_in, None, SINK, RECENT)
    full = model.base_model(torch.tensor([s["input_ids"] + s["answer_ids"]])).last_hidden_state
    assert torch.allclose(h, full[:, context.shape[1] :], atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_alpha_one_student_matches_teacher_and_only_alpha_gets_gradients(arch):
    model = install(freeze(tiny_model(arch)))
    before = model_hash(model)
    config = TrainConfig(sink=SINK, recent=RECENT, align=4)
    importance = Importance((2, 2, 16))
    terms = compute_loss(model, importance, sample(), config, stage=1)
    assert terms.mse.item() < 1e-10 and terms.total.item() == pytest.approx(config.l1 * 1.0)  # only the L1 term
    with torch.no_grad():
        importance.alpha.mul_(0.5)
    terms = compute_loss(model, importance, sample(), config, stage=1)
    terms.total.backward()
    assert terms.mse.item() > 0 and importance.alpha.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert model_hash(model) == before


def test_stage_two_forwards_the_binary_mask_and_passes_gradients_straight_through():
    importance = Importance((2, 2, 16))
    with torch.no_grad():
        importance.alpha.copy_(torch.rand(2, 2, 16, generator=torch.Generator().manual_seed(0)))
        importance.alpha[0, 0] = 0.0  # a head that loses all channels drops middle tokens
    weights, zero_heads = importance.student_weights(2, ratio=0.5, align=4)
    binary = weights.detach().round()
    assert torch.allclose(weights.detach(), binary) and set(binary.unique().tolist()) <= {0.0, 1.0}
    assert bool(zero_heads[0, 0]) and int(zero_heads.sum()) == int((weights.detach().sum(-1) == 0).sum())
    weights.sum().backward()
    assert torch.equal(importance.alpha.grad, torch.ones(2, 2, 16))


def kill_key_channels(model, channels: list[int]) -> None:
    """Zero the k_proj rows of ``channels`` (and their RoPE partners) in every head.

    q/k are scaled up first: a random tiny model attends almost uniformly, so no key channel
    would matter and every alpha would (rightly) go to 0.
    """
    d = model.config.head_dim
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(10)
            layer.self_attn.k_proj.weight.mul_(10)
            w = layer.self_attn.k_proj.weight.view(model.config.num_key_value_heads, d, -1)
            for c in channels:
                w[:, c] = 0
                w[:, (c + d // 2) % d] = 0


def test_learning_drops_channels_that_carry_no_information():
    model = tiny_model("llama", seed=3)
    dead = list(range(0, 8, 2))  # with RoPE partners: 8 of 16 channels are exactly zero
    kill_key_channels(model, dead)
    config = TrainConfig(ratio=0.5, align=4, sink=SINK, recent=RECENT, stage1_steps=30, stage2_steps=3,
                         lr=0.05, l1=1e-2, seed=0)
    data = [sample(seed=i) for i in range(4)]
    mask = learn_mask(model, data, config, model_id="org/tiny", progress=False)
    dead_with_partners = sorted({c for c in dead} | {c + 8 for c in dead})
    assert not mask.kept[..., dead_with_partners].any()
    assert mask.k_fraction_kept == pytest.approx(0.5)
    assert mask.model_id == "org/tiny" and mask.extra["training_config"]["lr"] == 0.05


def test_same_seed_gives_the_same_mask():
    config = TrainConfig(ratio=0.5, align=4, sink=SINK, recent=RECENT, stage1_steps=6, stage2_steps=2)
    data = [sample(seed=i) for i in range(3)]
    a = learn_mask(tiny_model(), data, config, progress=False)
    b = learn_mask(tiny_model(), data, config, progress=False)
    assert torch.equal(a.kept, b.kept) and torch.equal(a.importance, b.importance)
    assert a.model_hash == b.model_hash != ""


def test_invalid_settings_fail_before_training():
    with pytest.raises(ValueError, match="align"):
        learn_mask(tiny_model(), [sample()], TrainConfig(align=5), progress=False)
    with pytest.raises(ValueError, match="empty"):
        learn_mask(tiny_model(), [], TrainConfig(align=4), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        learn_mask(tiny_model(), [sample()], TrainConfig(align=4, batch_size=0), progress=False)
    with pytest.raises(ValueError, match="recent"):
        learn_mask(tiny_model(), [sample()], TrainConfig(align=4, recent=0), progress=False)


def test_schedule_is_stage_one_then_two_and_its_batches_split_over_any_worker_count():
    config = TrainConfig(stage1_steps=3, stage2_steps=2, lr=0.1, stage2_lr=0.05, batch_size=4, seed=5)
    steps = schedule(config, n_samples=10)
    assert [(s.index, s.stage, s.lr, s.starts_stage) for s in steps] == [
        (0, 1, 0.1, True), (1, 1, 0.1, False), (2, 1, 0.1, False), (3, 2, 0.05, True), (4, 2, 0.05, False)]
    assert steps == schedule(config, n_samples=10)  # a pure function: resumed runs see the same batches
    assert len({s.samples for s in steps}) > 1
    for s in steps:
        assert len(s.samples) == 4 and all(0 <= i < 10 for i in s.samples)
        assert s.share(0, 1) == s.share(0, 2) + s.share(1, 2) == sum((s.share(r, 4) for r in range(4)), ())
