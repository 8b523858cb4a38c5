"""Learning the mask: importance α, the distillation loss, the step schedule, and a plain loop.

The model stays frozen; only α (``[L, H_kv, D]``, initialised to 1) is trained. For one
sample (prompt + gold answer):

* teacher: the prompt is prefilled once with ordinary full attention and no gradient, the
  answer tokens riding along in its last forward (:func:`leank_core.kv_snapshot.prefill_through`):
  full keys everywhere, and no pass of its own (a step is launch-bound, and a separate
  16-token pass costs as many kernel launches as the student's forward);
* student: the answer tokens run again over the prompt's KV snapshot, read in place, with
  middle keys scaled channel-wise by α (stage 1) or by the binary mask with a
  straight-through gradient to α (stage 2, zero-count heads dropping middle tokens exactly
  as the inference cache does).

Loss = MSE of the final hidden states over the answer positions + λ·mean|α| (stage 1 only).
The context is prefilled with dense attention because that is what inference does (the
cache compacts only after prefill), so training optimises exactly the inference semantics.
Memory is the weights + one KV snapshot + O(answer tokens): the student attends with
:mod:`leank_core.continuation_attention`, which keeps no score matrix over the context.

``compute_loss`` is the one step function and :func:`schedule` the one step plan: a step
averages the loss over a global batch of ``batch_size`` samples. :func:`learn_mask` drives
them with :class:`ClampedAdam` here; the distributed job drives the same functions under
DeepSpeed, its workers splitting each step's batch, so one worker and several compute the
same α (up to the order of float sums).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from leank_core.adapters import architecture_of
from leank_core.compat import forward_with_cache
from leank_core.hook import install
from leank_core.kv_snapshot import ContinuationCache, KVSnapshot, prefill, prefill_through  # noqa: F401 (prefill: part of this API)
from leank_core.mask import LeanKMask, check_ratio_align, check_window, quantize_importance
from leank_core.model_hash import model_hash


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of both stages (docs/design.md §1; defaults sized for small models).

    ``batch_size`` samples make one step's loss (their mean): the reference recipe uses 1; a
    job with several workers needs a multiple of its worker count, each worker taking its share.
    """

    ratio: float = 0.7
    align: int = 16
    sink: int = 64
    recent: int = 256
    stage1_steps: int = 200
    stage2_steps: int = 20
    lr: float = 0.02
    stage2_lr: float = 0.01
    l1: float = 0.06
    seed: int = 0
    batch_size: int = 1

    def check(self, head_dim: int) -> None:
        """Raise a one-line ValueError for settings that cannot produce a mask."""
        check_ratio_align(self.ratio, self.align, head_dim)
        check_window(self.sink, self.recent)
        if self.stage1_steps < 0 or self.stage2_steps < 0:
            raise ValueError("stage1_steps and stage2_steps must be >= 0")
        if self.lr <= 0 or self.stage2_lr <= 0 or self.l1 < 0:
            raise ValueError("lr and stage2_lr must be > 0 and l1 >= 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PlannedStep:
    """One optimizer step: its stage and learning rate, and the dataset rows of its global batch."""

    index: int  # 0-based over both stages
    stage: int
    lr: float
    starts_stage: bool  # the optimizer restarts (fresh Adam state, this lr) before this step
    samples: tuple[int, ...]

    def share(self, rank: int, world: int) -> tuple[int, ...]:
        """The samples worker ``rank`` of ``world`` runs (``batch_size`` must be a multiple of ``world``)."""
        per = len(self.samples) // world
        return self.samples[rank * per:(rank + 1) * per]


def schedule(config: TrainConfig, n_samples: int) -> list[PlannedStep]:
    """Stage 1 then stage 2; each step's batch drawn from ``random.Random(seed)`` (a pure function,
    so a run resumed at any step and a run split over any number of workers see the same batches)."""
    rng = random.Random(config.seed)
    steps: list[PlannedStep] = []
    for stage, count, lr in ((1, config.stage1_steps, config.lr), (2, config.stage2_steps, config.stage2_lr)):
        for i in range(count):
            batch = tuple(rng.randrange(n_samples) for _ in range(config.batch_size))
            steps.append(PlannedStep(len(steps), stage, lr, i == 0, batch))
    return steps


class Importance(nn.Module):
    """The learnable channel importance α ∈ [0, 1]^{L × H_kv × D} (kept there by :class:`ClampedAdam`)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(*shape))

    def student_weights(self, stage: int, ratio: float, align: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Channel weights for middle keys and the zero-head flags for this stage.

        Stage 2 forwards the binary mask recomputed from α and passes the gradient straight
        through to α (``m + α - α.detach()``).
        """
        if stage == 1:
            return self.alpha, None
        mask = quantize_importance(self.alpha.detach(), ratio, align).to(self.alpha.device)
        weights = mask.to(self.alpha.dtype) + self.alpha - self.alpha.detach()
        return weights, ~mask.any(-1)


class ClampedAdam(torch.optim.Adam):
    """Adam whose step ends with the projection of α onto [0, 1]: the one place α is clamped.

    Under DeepSpeed ZeRO the optimizer holds the master copy of α and copies it back into the
    model after the step, so clamping the model's α would be overwritten; clamping inside the
    step clamps the copy that both the next forward pass and the next update see.
    Elementwise, so it is the same on a ZeRO partition as on the whole tensor.
    """

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                p.clamp_(0.0, 1.0)
        return loss

    def restart(self, lr: float) -> None:
        """Become a freshly constructed Adam with ``lr`` (each stage starts so)."""
        self.state.clear()
        for group in self.param_groups:
            group["lr"] = lr


def continuation_hidden(
    model: PreTrainedModel,
    context: KVSnapshot,
    continuation_ids: torch.Tensor,
    weights: torch.Tensor | None,
    sink: int,
    recent: int,
    zero_heads: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final hidden states of ``continuation_ids`` run after ``context`` under LeanK semantics.

    With a binary ``weights`` and ``zero_heads = counts == 0`` this is exactly what the
    inference cache computes token by token, so it is also the oracle for ``LeanKCache``.
    """
    cache = ContinuationCache(context, weights, sink, recent, zero_heads)
    return forward_with_cache(model.base_model, continuation_ids, cache).last_hidden_state


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    mse: torch.Tensor
    l1: torch.Tensor


def split_sample(input_ids: Sequence[int], answer_ids: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(context, continuation) = (prompt, gold answer tokens).

    The whole prompt is prefilled densely, exactly as ``generate`` does, and the answer tokens
    are the teacher-forced continuation whose hidden states are compared: inference
    semantics, where the first answer token is predicted by the dense prefill and every later
    token is decoded over the compacted cache.
    """
    return torch.tensor([list(input_ids)], device=device), torch.tensor([list(answer_ids)], device=device)


def compute_loss(
    model: PreTrainedModel,
    importance: Importance,
    sample: Mapping[str, Sequence[int]],
    config: TrainConfig,
    stage: int,
) -> LossTerms:
    """Distillation loss of one sample (``input_ids`` prompt, ``answer_ids`` gold answer)."""
    device = importance.alpha.device
    context_ids, answer_in = split_sample(sample["input_ids"], sample["answer_ids"], device)
    context, h_full = prefill_through(model, context_ids, answer_in)
    weights, zero_heads = importance.student_weights(stage, config.ratio, config.align)
    h = continuation_hidden(model, context, answer_in, weights, config.sink, config.recent, zero_heads)
    mse = (h.float() - h_full.float()).pow(2).mean()
    l1 = importance.alpha.abs().mean()
    lam = config.l1 if stage == 1 else 0.0
    return LossTerms(total=mse + lam * l1, mse=mse.detach(), l1=l1.detach())


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """No gradients and eval mode for every weight: only α trains."""
    model.requires_grad_(False)
    return model.eval()


def learn_mask(
    model: PreTrainedModel,
    dataset: Sequence[Mapping[str, Sequence[int]]],
    config: TrainConfig,
    model_id: str = "",
    extra: dict | None = None,
    progress: bool = True,
) -> LeanKMask:
    """Run :func:`schedule` (stage 1 then stage 2) on ``dataset`` in this process and return the mask."""
    arch = architecture_of(model)
    config.check(arch.head_dim)
    if len(dataset) == 0:
        raise ValueError("the training dataset is empty: generate samples first (leank_core.tasks)")
    install(freeze(model))
    torch.manual_seed(config.seed)
    device = next(model.parameters()).device
    importance = Importance(arch.mask_shape).to(device)
    optimizer = ClampedAdam(importance.parameters(), lr=config.lr)
    steps = schedule(config, len(dataset))
    bar = tqdm(steps, disable=not progress or not steps)
    for step in bar:
        if step.starts_stage:
            optimizer.restart(step.lr)
        optimizer.zero_grad(set_to_none=True)
        for index in step.samples:
            terms = compute_loss(model, importance, dataset[index], config, step.stage)
            (terms.total / len(step.samples)).backward()
        optimizer.step()
        bar.set_postfix(stage=step.stage, mse=f"{terms.mse.item():.3g}", l1=f"{terms.l1.item():.3f}")
    return LeanKMask.from_importance(
        importance.alpha.detach(), config.ratio, config.align, config.sink, config.recent,
        model_id=model_id, model_hash=model_hash(model),
        extra={"training_config": config.to_dict(), **(extra or {})},
    )
