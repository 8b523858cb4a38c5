"""pull_and_apply: one call hashes the model, pulls the newest accepted mask for it and applies it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leank_core import pull_and_apply
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash
from registry import GatePolicy, MaskRegistry, RegistryError, Report, SignedReport, generate_key, load_signer
from registry.signing import SIGNING_KEY_ENV, TRUSTED_KEYS_ENV
from tests.conftest import tiny_model


def mask_for(digest: str, kept_in_head0: int, model_id: str = "org/tiny") -> LeanKMask:
    """A mask of the tiny model's shape [2 layers, 2 KV heads, 16 channels] stamped for ``digest``
    (``kept_in_head0``: a multiple of 4 that makes masks differ)."""
    kept = torch.ones(2, 2, 16, dtype=torch.bool)
    kept[0, 0, kept_in_head0:] = False
    return LeanKMask(kept=kept, sink=3, recent=4, align=4, ratio=0.1, model_id=model_id,
                     model_hash=digest)


def publish(registry: MaskRegistry, mask: LeanKMask, accept: bool | None) -> None:
    """Push ``mask`` and judge it with a passing (accept) or failing signed report; None leaves it a candidate."""
    ref = registry.push(mask)
    if accept is None:
        return
    m = registry.manifest(ref)
    rows = [{"run": run, "task": "passkey", "length": 64, "index": i, "score": float(run == "full" or accept),
             "new_tokens": 1, "seconds": 1.0} for run in ("full", "masked") for i in range(2)]
    report = Report.build(rows, m.mask_sha256, m.model_id, m.model_hash, GatePolicy(), {}, {}, version=m.version,
                          manifest_sha256=m.sha256())
    registry.judge(ref, SignedReport.sign(report, load_signer()))


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MaskRegistry:
    """A registry without a policy: it trusts this user's own validator key (docs/trust.md)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv(SIGNING_KEY_ENV, generate_key(tmp_path / "validator.key").source)
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)
    return MaskRegistry(str(tmp_path / "registry"))


def test_applies_the_newest_accepted_mask_learned_for_these_weights(registry: MaskRegistry) -> None:
    model = tiny_model()
    digest = model_hash(model)
    publish(registry, mask_for(digest, 0), accept=True)
    publish(registry, mask_for(digest, 8), accept=True)
    publish(registry, mask_for(digest, 4), accept=False)
    publish(registry, mask_for(digest, 12), accept=None)
    mask = pull_and_apply(model, registry, model_id="org/tiny")
    assert mask.sha256() == mask_for(digest, 8).sha256()
    assert model.config._attn_implementation == "leank"


def test_a_model_with_other_weights_gets_nothing_and_stays_as_it_was(registry: MaskRegistry) -> None:
    publish(registry, mask_for(model_hash(tiny_model(seed=0)), 8), accept=True)
    other = tiny_model(seed=1)
    with pytest.raises(RegistryError, match="learn a mask for this model"):
        pull_and_apply(other, registry, model_id="org/tiny")
    assert other.config._attn_implementation != "leank"


def test_the_model_id_defaults_to_the_hub_id_the_model_was_loaded_from(registry: MaskRegistry) -> None:
    model = tiny_model()
    publish(registry, mask_for(model_hash(model), 8), accept=True)
    with pytest.raises(ValueError, match="pass model_id='org/name'"):
        pull_and_apply(model, registry)  # built from a config: no hub id to go by
    model.config._name_or_path = "org/tiny"
    assert pull_and_apply(model, registry).model_id == "org/tiny"


def test_a_mask_stamped_for_other_weights_is_refused_even_if_the_source_serves_it() -> None:
    class Careless:
        def pull(self, model_id: str, *, model_hash: str | None = None) -> LeanKMask:
            return mask_for("0" * 64, 8, model_id)

    model = tiny_model()
    with pytest.raises(ValueError, match="registry is damaged"):
        pull_and_apply(model, Careless(), model_id="org/tiny")
    assert model.config._attn_implementation != "leank"
