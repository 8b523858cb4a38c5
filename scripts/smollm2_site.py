"""The registry site for the committed SmolLM2 masks, and the screenshot of it in docs/.

Pushes ``results/smollm2/mask_r70`` and ``mask_r50`` into a fresh local registry, attaches their
committed validation reports in the order they were made (the first one decides: decisions are
final), renders the site and, with ``--screenshot``, photographs a version page in headless
Chromium (from a local ``http.server``; nothing is fetched from elsewhere).

    PYTHONPATH=. python scripts/smollm2_site.py --out /tmp/smollm2-site --screenshot docs/site_smollm2.png

``mask_cpu_quick_r70`` is left out: its report judged the mask's bytes before the model-hash
re-stamp (results/smollm2/README.md), so the registry would refuse to attach it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leank_core.mask import LeanKMask  # noqa: E402
from registry import MaskRegistry, Report  # noqa: E402
from registry.site import render_site, site_server  # noqa: E402
from registry.site.browser import screenshot  # noqa: E402

RESULTS = ROOT / "results" / "smollm2"
# mask file → its reports, oldest first (commit order: e9e8551, 47d0fb0, a6b75e8; 3fa15f1, 47d0fb0)
VERSIONS = {
    "mask_r70.safetensors": ["cpu_r70_baseline/report.json", "gpu_job/validate_r70.json", "cpu_r70_s8/report.json"],
    "mask_r50.safetensors": ["cpu_r50/report.json", "gpu_job/validate_r50.json"],
}


def build_registry(url: str) -> MaskRegistry:
    registry = MaskRegistry(url)
    for mask_file, reports in VERSIONS.items():
        mask = LeanKMask.load(RESULTS / mask_file)
        ref = registry.push(mask, {**mask.extra, "source": f"results/smollm2/{mask_file}"})
        for name in reports:
            registry.judge(ref, Report.from_json((RESULTS / name).read_bytes(), name))
    return registry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where to write the site")
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the page of version 1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leank-smollm2-site-") as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # the pulled masks stay in here
        index = render_site(build_registry(str(Path(tmp) / "registry")), args.out)
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
