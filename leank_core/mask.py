"""LeanKMask: the learned static K-channel mask and its stage-2 quantisation.

A mask is a boolean tensor ``[L, H_kv, D]`` (layer, KV head, channel). It is applied to
"middle" tokens only: the first ``sink`` and the last ``recent`` tokens keep full keys.
Heads that keep zero channels skip middle tokens entirely (no K and no V stored), which
is where the value-cache saving comes from.

Masks are stored as safetensors (never pickle) with their metadata as JSON strings, so a
mask file is safe to load from an untrusted registry.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

FORMAT_VERSION = "1"


def check_ratio_align(ratio: float, align: int, head_dim: int) -> None:
    """Reject quantisation settings that cannot give a hardware-aligned exact-ratio mask."""
    if not (0.0 <= ratio < 1.0):
        raise ValueError(f"ratio must be in [0, 1) (fraction of K channels to drop), got {ratio}")
    if not isinstance(align, int) or align < 1 or head_dim % align != 0:
        raise ValueError(
            f"align must be a positive divisor of head_dim={head_dim} (e.g. 16 or 32), got {align}"
        )


def check_window(sink: int, recent: int) -> None:
    """Reject sink / recent sizes that leave no dense window (the query's own token must stay dense)."""
    if sink < 0 or recent < 1:
        raise ValueError(f"sink must be >= 0 and recent >= 1, got sink={sink} recent={recent}")


def quantize_importance(alpha: torch.Tensor, ratio: float, align: int) -> torch.Tensor:
    """Stage-2 quantisation of importance scores into a binary aligned mask.

    1. A *global* threshold tau (the ``ratio``-quantile over all layers and heads) so that
       important layers keep more channels than unimportant ones.
    2. Per head, kept count ``c = round(#{alpha > tau} / align) * align`` clipped to [0, D],
       so every head's compact key row is a whole number of kernel tiles.
    3. The head keeps its top-``c`` channels by alpha (ties: lower channel index first).
    """
    if alpha.dim() != 3:
        raise ValueError(f"importance must have shape [layers, kv_heads, head_dim], got {tuple(alpha.shape)}")
    head_dim = alpha.shape[-1]
    check_ratio_align(ratio, align, head_dim)
    a = alpha.detach().float().cpu()
    # The r-quantile as an order statistic: exactly round(r * n) values fall at or below tau.
    # Ties at tau (common: clamping sends many alphas to exactly 0) are broken by position,
    # so the kept total stays exact instead of collapsing when most of alpha is 0.
    n_drop = int(round(ratio * a.numel()))
    above = torch.ones(a.numel(), dtype=torch.bool)
    above[torch.sort(a.flatten(), stable=True).indices[:n_drop]] = False
    above = above.view_as(a)
    counts = torch.floor(above.sum(-1).float() / align + 0.5).long() * align
    counts = counts.clamp(0, head_dim)
    # Stable descending order: equal scores keep the lower channel index first.
    order = torch.sort(-a, dim=-1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(head_dim).expand_as(order).contiguous())
    return ranks < counts.unsqueeze(-1)


@dataclass(frozen=True)
class LeanKMask:
    """A binary K-channel mask plus what is needed to apply it exactly as it was learned."""

    kept: torch.Tensor  # bool [L, H_kv, D]: True = channel kept for middle tokens
    sink: int
    recent: int
    align: int
    ratio: float
    model_id: str = ""
    model_hash: str = ""
    importance: torch.Tensor | None = None  # float [L, H_kv, D], the learned alpha, for analysis
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (training config ...)

    def __post_init__(self) -> None:
        if self.kept.dim() != 3:
            raise ValueError(f"mask must have shape [layers, kv_heads, head_dim], got {tuple(self.kept.shape)}")
        if self.kept.dtype != torch.bool:  # a 0/1 float or a score tensor would silently keep every nonzero
            raise ValueError(f"mask must be a bool tensor (True = channel kept), got {self.kept.dtype}")
        object.__setattr__(self, "kept", self.kept.detach().to("cpu").contiguous())
        if self.importance is not None:
            if self.importance.shape != self.kept.shape:
                raise ValueError("importance must have the same shape as the mask")
            object.__setattr__(self, "importance", self.importance.detach().to("cpu", torch.float32).contiguous())
        check_window(self.sink, self.recent)
        if not isinstance(self.align, int) or self.align < 1:
            raise ValueError(f"align must be a positive integer, got {self.align!r}")
        if not (isinstance(self.ratio, (int, float)) and 0.0 <= self.ratio <= 1.0):  # NaN fails too
            raise ValueError(f"ratio must be a number in [0, 1], got {self.ratio!r}")
        if self.kept.shape[-1] % self.align:
            raise ValueError(f"align={self.align} does not divide head_dim={self.kept.shape[-1]}")
        bad = self.kept_counts() % self.align
        if bool(bad.any()):
            raise ValueError(f"every head's kept count must be a multiple of align={self.align}")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_importance(
        cls,
        alpha: torch.Tensor,
        ratio: float,
        align: int,
        sink: int,
        recent: int,
        model_id: str = "",
        model_hash: str = "",
        extra: dict[str, Any] | None = None,
    ) -> "LeanKMask":
        """Stage-2 quantisation (see :func:`quantize_importance`); keeps alpha for analysis."""
        return cls(
            kept=quantize_importance(alpha, ratio, align),
            sink=sink,
            recent=recent,
            align=align,
            ratio=ratio,
            model_id=model_id,
            model_hash=model_hash,
            importance=alpha,
            extra=dict(extra or {}),
        )

    @classmethod
    def from_reference_file(
        cls,
        path: str | Path,
        sink: int = 128,
        recent: int = 768,
        align: int | None = None,
        model_id: str = "",
        model_hash: str = "",
    ) -> "LeanKMask":
        """Read the reference release format: a 0/1 tensor ``[L, H_kv, D]`` saved with torch.save.

        ``sink``/``recent`` default to how the authors deploy their released masks (128 / 768;
        their code compacts middle tokens in chunks of 128, so 768–895 recent tokens stay dense).

        ``weights_only=True`` so a hostile file cannot execute code. The alignment, if not
        given, is the largest power of two dividing every head's kept count (capped at D).
        """
        try:
            t = torch.load(Path(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
            raise ValueError(f"cannot read reference mask {path}: {e}") from None
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"reference mask {path} must hold one tensor of shape [layers, kv_heads, head_dim]")
        if not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"reference mask {path} must contain only 0 and 1")
        mask = t.bool()
        counts = mask.sum(-1)
        if align is None:
            align = _largest_common_pow2(counts, mask.shape[-1])
        ratio = 1.0 - mask.float().mean().item()
        return cls(kept=mask, sink=sink, recent=recent, align=align, ratio=ratio,
                   model_id=model_id, model_hash=model_hash, extra={"source": "reference"})

    # -- statistics ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.kept.shape)  # type: ignore[return-value]

    def kept_counts(self) -> torch.Tensor:
        """Kept channels per head, ``[L, H_kv]`` int64."""
        return self.kept.sum(-1)

    @property
    def k_fraction_kept(self) -> float:
        """Fraction of middle-token K bytes that are stored (1 - achieved pruning ratio)."""
        return self.kept.float().mean().item()

    @property
    def v_fraction_kept(self) -> float:
        """Fraction of middle-token V bytes that are stored: zero-count heads store no V."""
        return (self.kept_counts() > 0).float().mean().item()

    def histogram(self) -> dict[int, int]:
        """Kept-count histogram over all heads, e.g. ``{0: 47, 32: 120, ...}``."""
        values, freq = torch.unique(self.kept_counts(), return_counts=True)
        return {int(v): int(f) for v, f in zip(values, freq)}

    def random_like(self, seed: int) -> "LeanKMask":
        """A baseline with the same kept count per head but random channels: what learning is worth."""
        g = torch.Generator().manual_seed(seed)
        ranks = torch.rand(self.kept.shape, generator=g).argsort(-1).argsort(-1)
        kept = ranks < self.kept_counts().unsqueeze(-1)
        return replace(self, kept=kept, importance=None, extra={**self.extra, "baseline": "random", "seed": seed})

    def keep_all(self) -> "LeanKMask":
        """The full cache in this mask's window geometry: every channel kept, same sink and recent.

        Validation scores the full cache with this rather than with the engine's dense twin, so
        that a (full, masked) pair differs only in the pruned channels: the same windows give the
        same kernel splits and summation order. Against the dense twin, a keep-all mask changed
        2.2 % of SmolLM2's bf16 answers through rounding alone (docs/gate.md), noise the gate
        would otherwise have to average away.
        """
        return replace(self, kept=torch.ones_like(self.kept), ratio=0.0, importance=None,
                       extra={**self.extra, "baseline": "full"})

    def with_identity(self, model_id: str, model_hash: str) -> "LeanKMask":
        return replace(self, model_id=model_id, model_hash=model_hash)

    # -- serialisation ------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        return {
            "format": "leank-mask",
            "format_version": FORMAT_VERSION,
            "sink": str(self.sink),
            "recent": str(self.recent),
            "align": str(self.align),
            "ratio": repr(float(self.ratio)),
            "model_id": self.model_id,
            "model_hash": self.model_hash,
            "extra": json.dumps(self.extra, sort_keys=True),
        }

    def to_bytes(self) -> bytes:
        tensors = {"mask": self.kept.to(torch.uint8)}
        if self.importance is not None:
            tensors["importance"] = self.importance
        return _canonical_header(save(tensors, metadata=self.metadata()))

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)  # never leave a half-written mask behind
        return path

    @classmethod
    def from_bytes(cls, data: bytes) -> "LeanKMask":
        """Parse a mask file's bytes; any malformed input (truncated, wrong tensors or metadata)
        is one ValueError, since the bytes may come from anywhere."""
        meta = _read_metadata(data)
        if meta.get("format") != "leank-mask":
            raise ValueError("not a LeanK mask file (missing format=leank-mask metadata)")
        try:
            tensors = load(data)
        except SafetensorError as e:
            raise ValueError(f"corrupt or truncated safetensors data ({e})") from None
        if "mask" not in tensors or set(tensors) - {"mask", "importance"}:
            raise ValueError(f"a mask file holds 'mask' (and optionally 'importance'), not {sorted(tensors)}")
        try:
            extra = json.loads(meta.get("extra", "{}"))
            fields = dict(sink=int(meta["sink"]), recent=int(meta["recent"]), align=int(meta["align"]),
                          ratio=float(meta["ratio"]))
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"mask metadata is incomplete or malformed ({type(e).__name__}: {e})") from None
        if not isinstance(extra, dict):
            raise ValueError("mask metadata 'extra' must be a JSON object")
        return cls(kept=tensors["mask"].bool(), importance=tensors.get("importance"), extra=extra,
                   model_id=meta.get("model_id", ""), model_hash=meta.get("model_hash", ""), **fields)

    @classmethod
    def load(cls, path: str | Path) -> "LeanKMask":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"mask file not found: {path}")
        try:
            return cls.from_bytes(path.read_bytes())
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read mask {path}: {e}") from None


def _canonical_header(data: bytes) -> bytes:
    """Rewrite the safetensors JSON header with sorted keys.

    safetensors writes its metadata map in hash order, so the same mask would serialise to
    different bytes (and sha256) from call to call; the registry and the validation gate
    identify a mask by that digest. The rewritten header has the same length (same items,
    same compact separators), so the tensor offsets stay valid.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return data[:8] + text.ljust(n) + data[8 + n :]


def _read_metadata(data: bytes) -> dict[str, str]:
    """The JSON header of a safetensors blob, without parsing tensors (fails cleanly on junk)."""
    if len(data) < 8:
        raise ValueError("file too short to be safetensors")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("corrupt safetensors header")
    try:
        header = json.loads(data[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise ValueError("corrupt safetensors header")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("corrupt safetensors header (no string metadata)")
    return meta


def _largest_common_pow2(counts: torch.Tensor, head_dim: int) -> int:
    nonzero = [int(c) for c in counts.flatten() if int(c) > 0]
    g = 0
    for c in nonzero:
        g = math.gcd(g, c)
    if g == 0:
        return head_dim
    a = 1
    while g % (a * 2) == 0 and head_dim % (a * 2) == 0:
        a *= 2
    return a
