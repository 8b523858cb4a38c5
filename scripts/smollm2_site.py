"""The registry site for the committed SmolLM2 masks, and the screenshot of it in docs/.

Pushes ``results/smollm2/mask_r70`` and ``mask_r50`` into a fresh local registry and has it judge
their GPU validation at 64 samples per cell, 1K–8K (``results/smollm2/gate_gpu``, made by
``scripts/smollm2_gate.py`` for the mask files): each committed report is bound to the version it
becomes (model id, version, manifest digest) and signed with a key made for this demo, which the
demo registry's policy trusts. Then it renders the site and, with ``--screenshot``, photographs a
version page in headless Chromium (from a local ``http.server``; nothing is fetched from elsewhere).

    PYTHONPATH=. python scripts/smollm2_site.py --out /tmp/smollm2-site --screenshot docs/site_smollm2.png

``mask_cpu_quick_r70`` is left out: its 64-per-cell reports came later (``gate_gpu_quick``, ``gate_gpu_keepall``)
and the screenshot shows the 70 % GPU mask's page.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leank_core.mask import LeanKMask  # noqa: E402
from registry import MaskRegistry, Policy, Report, SignedReport, generate_key  # noqa: E402
from registry.site import render_site, site_server  # noqa: E402
from registry.site.browser import screenshot  # noqa: E402

RESULTS = ROOT / "results" / "smollm2"
VERSIONS = {"mask_r70.safetensors": "gate_gpu/gpu_r70/report.json", "mask_r50.safetensors": "gate_gpu/gpu_r50/report.json"}


def build_registry(url: str, key: Path) -> MaskRegistry:
    registry = MaskRegistry(url)
    signer = generate_key(key)
    registry.update_policy(lambda _: Policy(trusted_keys=(signer.public_key,)))
    for mask_file, report_file in VERSIONS.items():
        mask = LeanKMask.load(RESULTS / mask_file)
        ref = registry.push(mask, {**mask.extra, "source": f"results/smollm2/{mask_file}"})
        manifest = registry.manifest(ref)
        report = Report.from_json((RESULTS / report_file).read_bytes(), report_file)
        bound = replace(report, version=ref.version, manifest_sha256=manifest.sha256())
        registry.judge(ref, SignedReport.sign(bound, signer))
    return registry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where to write the site")
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the page of version 1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leank-smollm2-site-") as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # the pulled masks stay in here
        index = render_site(build_registry(str(Path(tmp) / "registry"), Path(tmp) / "demo.key"), args.out)
    print(index)
    if args.screenshot:
        server = site_server(index.parent, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/models/HuggingFaceTB/SmolLM2-135M-Instruct/1/index.html"
            print(screenshot(url, args.screenshot, width=1280, height=2000))
        finally:
            server.shutdown()
            server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
