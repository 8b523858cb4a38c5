"""Training: teacher = dense attention, student = LeanK semantics, gradients only into α."""

from __future__ import annotations

import dataclasses
import re
import pytest
import torch

from leank_core.attention import MaskedAttention
from leank_core.cache import LeanKCache
from leank_core.compat import cache_kwargs
from leank_core.hook import AttentionMode, active_mode, install
from leank_core.mask import LeanKMask
from leank_core.training import (
    ClampedAdam,
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
    terms.total.backward()
    assert all(p.grad is None for p in model.parameters())
    assert not model.training and model_hash(model) == before


class InferenceSemantics(AttentionMode):
    """What generate computes, over one whole sequence: the prompt's rows dense (the prefill), the answer's
    rows with LeanK semantics over every earlier key (decode) — built from attention.py, not from training.py."""

    def __init__(self, n_prompt: int, weights, zero_heads=None) -> None:
        self.n_prompt, self.weights, self.zero_heads = n_prompt, weights, zero_heads

    def attend(self, module, query, key, value, attention_mask, scaling):
        p = self.n_prompt
        dense = MaskedAttention(None, SINK, RECENT).attend(module, query[:, :, :p], key[:, :, :p], value[:, :, :p],
                                                           None, scaling)
        lean = MaskedAttention(self.weights, SINK, RECENT, self.zero_heads).attend(module, query[:, :, p:], key, value,
                                                                                   None, scaling)
        return torch.cat([dense, lean], dim=1)


def expected_loss(model, s, weights, zero_heads=None):
    """MSE of the answer's final hidden states: inference semantics with ``weights`` against the plain model."""
    ids, p = torch.tensor([s["input_ids"] + s["answer_ids"]]), len(s["input_ids"])
    with torch.no_grad():
        teacher = model.base_model(ids).last_hidden_state[:, p:]
    with active_mode(InferenceSemantics(p, weights, zero_heads)):
        student = model.base_model(ids).last_hidden_state[:, p:]
    return (student - teacher).pow(2).mean()


def peaked_model():
    """Attention that is not uniform, so which keys are masked changes the hidden states."""
    model = tiny_model("llama", seed=2)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(10)
            layer.self_attn.k_proj.weight.mul_(10)
    return install(freeze(model))


def trained_alpha() -> torch.Tensor:
    alpha = torch.rand(2, 2, 16, generator=torch.Generator().manual_seed(4))
    alpha[0, 0] = 0.0  # a head that loses every channel: a zero head in stage 2
    return alpha


def test_stage_one_loss_is_inference_semantics_with_alpha_plus_l1_and_its_gradient():
    """The student scales middle keys (never sink or recent ones) by α; the loss adds λ·mean|α|."""
    model, s = peaked_model(), sample()
    config = TrainConfig(sink=SINK, recent=RECENT, align=4, l1=0.3)
    importance = Importance((2, 2, 16))
    with torch.no_grad():
        importance.alpha.copy_(trained_alpha())
    terms = compute_loss(model, importance, s, config, stage=1)
    terms.total.backward()
    alpha = trained_alpha().requires_grad_()
    mse = expected_loss(model, s, alpha)
    (mse + config.l1 * alpha.abs().mean()).backward()
    assert terms.mse.item() == pytest.approx(mse.item(), rel=1e-4) and terms.mse.item() > 1e-4
    assert terms.l1.item() == pytest.approx(alpha.mean().item(), rel=1e-6)
    assert terms.total.item() == pytest.approx(mse.item() + config.l1 * terms.l1.item(), rel=1e-4)
    assert torch.allclose(importance.alpha.grad, alpha.grad, rtol=1e-3, atol=1e-7)


def test_stage_two_loss_is_what_the_inference_cache_decodes_without_l1():
    """Stage 2's student is the LeanKCache's decode (zero heads drop middle tokens); no L1 term;
    the gradient reaches α straight through the binary mask."""
    model, s = peaked_model(), sample()
    config = TrainConfig(sink=SINK, recent=RECENT, align=4, ratio=0.5, l1=0.3)
    importance = Importance((2, 2, 16))
    with torch.no_grad():
        importance.alpha.copy_(trained_alpha())
    terms = compute_loss(model, importance, s, config, stage=2)
    terms.total.backward()
    mask = LeanKMask.from_importance(trained_alpha(), config.ratio, config.align, SINK, RECENT)
    assert mask.kept_counts()[0, 0] == 0
    cache = LeanKCache(mask, model.config)
    with torch.no_grad():
        model.base_model(torch.tensor([s["input_ids"]]), **cache_kwargs(model, cache))
        decoded = model.base_model(torch.tensor([s["answer_ids"]]), **cache_kwargs(model, cache)).last_hidden_state
        teacher = model.base_model(torch.tensor([s["input_ids"] + s["answer_ids"]])).last_hidden_state[:, -5:]
    mse = (decoded - teacher).pow(2).mean()
    assert terms.mse.item() == pytest.approx(mse.item(), rel=1e-4) and terms.mse.item() > 1e-4
    assert torch.equal(terms.total.detach(), terms.mse)
    weights = mask.kept.float().requires_grad_()
    expected_loss(model, s, weights, mask.kept_counts() == 0).backward()
    assert torch.allclose(importance.alpha.grad, weights.grad, rtol=1e-3, atol=1e-7)


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
    assert a.model_hash == b.model_hash == model_hash(tiny_model()) and a.model_id == ""


def test_a_steps_loss_is_the_mean_over_its_batch():
    """Two copies of one sample in a batch of 2 step exactly as that sample alone in a batch of 1."""
    s = sample()
    config = TrainConfig(ratio=0.5, align=4, sink=SINK, recent=RECENT, stage1_steps=3, stage2_steps=1)
    alone = learn_mask(tiny_model(), [s], config, progress=False)
    pair = learn_mask(tiny_model(), [s, s], dataclasses.replace(config, batch_size=2), progress=False)
    assert torch.equal(alone.importance, pair.importance)


def test_progress_shows_each_steps_stage_and_losses_unless_turned_off_or_empty(capsys):
    config = TrainConfig(ratio=0.5, align=4, sink=SINK, recent=RECENT, stage1_steps=1, stage2_steps=1)
    learn_mask(tiny_model(), [sample()], config)  # one sample is enough
    err = capsys.readouterr().err
    assert "2/2" in err and re.search(r"l1=[0-9]\.[0-9]{3}, mse=[0-9.e+-]+, stage=2", err), err  # tqdm sorts keys
    learn_mask(tiny_model(), [sample()], config, progress=False)
    learn_mask(tiny_model(), [sample()], dataclasses.replace(config, stage1_steps=0, stage2_steps=0))
    assert capsys.readouterr().err == ""


def test_invalid_settings_fail_before_training():
    with pytest.raises(ValueError, match="align"):
        learn_mask(tiny_model(), [sample()], TrainConfig(align=5), progress=False)
    empty = r"^the training dataset is empty: generate samples first \(leank_core\.tasks\)$"
    with pytest.raises(ValueError, match=empty):
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


@pytest.mark.parametrize("changes, message", [
    ({"stage1_steps": -1}, "stage1_steps and stage2_steps must be >= 0"),
    ({"stage2_steps": -1}, "stage1_steps and stage2_steps must be >= 0"),
    ({"lr": 0.0}, "lr and stage2_lr must be > 0 and l1 >= 0"),
    ({"stage2_lr": 0.0}, "lr and stage2_lr must be > 0 and l1 >= 0"),
    ({"l1": -0.01}, "lr and stage2_lr must be > 0 and l1 >= 0"),
])
def test_each_bad_step_count_or_rate_is_refused(changes, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        dataclasses.replace(TrainConfig(align=4), **changes).check(head_dim=16)


def test_no_steps_and_no_l1_are_valid_settings():
    TrainConfig(align=4, stage1_steps=0, stage2_steps=0, l1=0.0).check(head_dim=16)


def test_restarting_the_optimizer_forgets_its_state_and_takes_the_new_rate():
    importance = Importance((1, 1, 4))
    optimizer = ClampedAdam(importance.parameters(), lr=0.1)
    importance.alpha.sum().backward()
    optimizer.step()
    assert optimizer.state and bool((importance.alpha <= 1).all())
    optimizer.restart(0.5)
    assert not optimizer.state and optimizer.param_groups[0]["lr"] == 0.5
