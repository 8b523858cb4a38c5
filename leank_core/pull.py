"""One call for users: the newest accepted mask for exactly this model's weights, applied.

``leank_core`` never imports the registry (docs/architecture.md: imports only go downward), so
the registry is passed in: anything with a ``pull(model_id, model_hash=...)`` method that returns
a :class:`LeanKMask`, normally ``registry.MaskRegistry(url)``::

    from leank_core import pull_and_apply
    from registry import MaskRegistry
    mask = pull_and_apply(model, MaskRegistry(), model_id="HuggingFaceTB/SmolLM2-135M-Instruct")
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from transformers import PreTrainedModel

from leank_core.hook import apply
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash


class MaskSource(Protocol):
    """Where masks come from (``registry.MaskRegistry``): the newest accepted one learned for ``model_hash``."""

    def pull(self, model_id: str, *, model_hash: str | None = None) -> LeanKMask: ...


def pull_and_apply(model: PreTrainedModel, registry: MaskSource, model_id: str | None = None) -> LeanKMask:
    """Hash ``model``'s weights, pull the newest accepted mask learned for them, apply it; return the mask.

    ``model_id`` is the id masks are registered under; by default the hub id the model was
    loaded from (``model.config._name_or_path``). The weights are hashed once: the registry
    refuses masks learned for other weights, and the mask's own stamp is checked here.
    """
    model_id = model_id or _hub_id(model)
    digest = model_hash(model)
    mask = registry.pull(model_id, model_hash=digest)
    if mask.model_hash != digest:
        raise ValueError(f"the registry served a mask stamped for model hash {mask.model_hash[:16] or '(none)'}, "
                         f"this model is {digest[:16]}; the registry is damaged, report it to its owner")
    apply(model, mask, allow_hash_mismatch=True)  # the hash was compared just above; hashing again costs seconds
    return mask


def _hub_id(model: PreTrainedModel) -> str:
    name = str(getattr(model.config, "_name_or_path", "") or "")
    if name.count("/") != 1 or Path(name).exists() or not all(name.split("/")):
        raise ValueError(f"cannot tell which model id this model's masks are registered under (it was loaded "
                         f"from {name or 'a config'!r}); pass model_id='org/name'")
    return name
