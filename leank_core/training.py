"""Learning the mask: importance α, the distillation loss, and a plain two-stage loop.

The model stays frozen; only α (``[L, H_kv, D]``, initialised to 1) is trained. For one
sample (prompt + gold answer) the prompt is prefilled once with ordinary full attention
and no gradient; the answer tokens are then run twice over copies of that KV cache:

* teacher: full keys everywhere (LeanK semantics with weights ``None``);
* student: middle keys scaled channel-wise by α (stage 1) or by the binary mask with a
  straight-through gradient to α (stage 2, zero-count heads dropping middle tokens exactly
  as the inference cache does).

Loss = MSE of the final hidden states over the answer positions + λ·mean|α| (stage 1 only).
The context is prefilled with dense attention because that is what inference does (the
cache compacts only after prefill), so training optimises exactly the inference semantics.

``compute_loss`` is the one step function: :func:`learn_mask` drives it with Adam here, and
the distributed job drives the same function under DeepSpeed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel

from leank_core.adapters import architecture_of
from leank_core.attention import masked_attention
from leank_core.hook import install
from leank_core.mask import LeanKMask, check_ratio_align, quantize_importance
from leank_core.model_hash import model_hash


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of both stages (docs/design.md §1; defaults sized for small models)."""

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

    def check(self, head_dim: int) -> None:
        """Raise a one-line ValueError for settings that cannot produce a mask."""
        check_ratio_align(self.ratio, self.align, head_dim)
        if self.sink < 0 or self.recent < 1:
            raise ValueError(f"sink must be >= 0 and recent >= 1, got sink={self.sink} recent={self.recent}")
        if self.stage1_steps < 0 or self.stage2_steps < 0:
            raise ValueError("stage1_steps and stage2_steps must be >= 0")
        if self.lr <= 0 or self.stage2_lr <= 0 or self.l1 < 0:
            raise ValueError("lr and stage2_lr must be > 0 and l1 >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


class Importance(nn.Module):
    """The learnable channel importance α ∈ [0, 1]^{L × H_kv × D}."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(*shape))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Project back onto [0, 1]; called after every optimizer step."""
        self.alpha.clamp_(0.0, 1.0)

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


@dataclass(frozen=True)
class KVSnapshot:
    """The per-layer keys/values of a prefilled context, reusable for several passes."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    def cache(self) -> DynamicCache:
        """A fresh cache holding the snapshot (passes must not see each other's tokens)."""
        cache = DynamicCache()
        for i, (k, v) in enumerate(self.layers):
            cache.update(k, v, i)
        return cache


def run_with_cache(module: torch.nn.Module, input_ids: torch.Tensor, cache: DynamicCache):
    """Call a transformers model with a KV cache on every supported 5.x version.

    The keyword was renamed (``past_key_values`` → ``cache``) in 5.2x; both versions take the
    cache as the fourth positional argument (input_ids, attention_mask, position_ids, cache).
    """
    return module(input_ids, None, None, cache, use_cache=True)


@torch.no_grad()
def prefill(model: PreTrainedModel, input_ids: torch.Tensor) -> KVSnapshot:
    """Run the context with ordinary full attention and keep its KV cache."""
    cache = DynamicCache()
    run_with_cache(model.base_model, input_ids, cache)
    return KVSnapshot(tuple((layer.keys, layer.values) for layer in cache.layers))


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
    with masked_attention(weights, sink, recent, zero_heads):
        out = run_with_cache(model.base_model, continuation_ids, context.cache())
    return out.last_hidden_state


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
    context = prefill(model, context_ids)
    with torch.no_grad():
        h_full = continuation_hidden(model, context, answer_in, None, config.sink, config.recent)
    weights, zero_heads = importance.student_weights(stage, config.ratio, config.align)
    h = continuation_hidden(model, context, answer_in, weights, config.sink, config.recent, zero_heads)
    mse = (h.float() - h_full.float()).pow(2).mean()
    l1 = importance.alpha.abs().mean()
    lam = config.l1 if stage == 1 else 0.0
    return LossTerms(total=mse + lam * l1, mse=mse.detach(), l1=l1.detach())


def prepare(model: PreTrainedModel) -> PreTrainedModel:
    """Freeze the model and route its attention through the LeanK hook."""
    model.requires_grad_(False)
    model.eval()
    return install(model)


def learn_mask(
    model: PreTrainedModel,
    dataset: Sequence[Mapping[str, Sequence[int]]],
    config: TrainConfig,
    model_id: str = "",
    extra: dict | None = None,
    progress: bool = True,
) -> LeanKMask:
    """Run stage 1 then stage 2 on ``dataset`` (cycled, seeded order) and return the mask."""
    arch = architecture_of(model)
    config.check(arch.head_dim)
    if len(dataset) == 0:
        raise ValueError("the training dataset is empty: generate samples first (leank_core.tasks)")
    prepare(model)
    torch.manual_seed(config.seed)
    device = next(model.parameters()).device
    importance = Importance(arch.mask_shape).to(device)
    order = random.Random(config.seed)
    for stage, steps, lr in ((1, config.stage1_steps, config.lr), (2, config.stage2_steps, config.stage2_lr)):
        optimizer = torch.optim.Adam(importance.parameters(), lr=lr)
        bar = tqdm(range(steps), desc=f"stage {stage}", disable=not progress or steps == 0)
        for _ in bar:
            terms = compute_loss(model, importance, dataset[order.randrange(len(dataset))], config, stage)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            importance.clamp_()
            bar.set_postfix(mse=f"{terms.mse.item():.3g}", l1=f"{terms.l1.item():.3f}")
    return LeanKMask.from_importance(
        importance.alpha.detach(), config.ratio, config.align, config.sink, config.recent,
        model_id=model_id, model_hash=model_hash(model),
        extra={"training_config": config.to_dict(), **(extra or {})},
    )
