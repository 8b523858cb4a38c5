#!/usr/bin/env bash
# Stage what the learn job needs on the GPU machine, which has no network and takes 64 MiB per call
# (see docs/cluster.md for the job itself). Two modes:
#
#   bash scripts/stage_device.sh download   HERE (network, repo root): cp312 manylinux wheels into the
#                                            git-ignored folders .carry/ray and .carry/deps (each <= 60 MiB)
#   bash scripts/stage_device.sh install    THERE (repo root, after a call that carried one or both folders):
#                                            unpack every carried part into /tmp/site and check the imports
#
# .carry/ray:  ray, repacked without what the job never loads: the Java jars, RLlib, Serve, the LLM
#              library and the dashboard's web UI (a wheel of ~76 MiB becomes a zip of ~40 MiB).
# .carry/deps: deepspeed (a pure-Python wheel built here), datasets, and the pure-Python or compiled
#              dependencies of ray, ray[train], deepspeed and datasets that the machine's image lacks
#              (its package list: the device README's KINDS.md, "Python packages already there").
# Versions are the ones the CPU test suite runs with. /tmp/site stays while the machine is warm, so the
# parts may also come in separate calls, each followed by `install`.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
RAY=ray==2.60.0
DEEPSPEED=deepspeed==0.19.8
DEPS=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hjson==3.1.0 pydantic==2.13.4 pydantic-core==2.46.4
      annotated-types==0.7.0 typing-inspection==0.4.2 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
      referencing==0.37.0 rpds-py==0.30.0 tensorboardX==2.6.5)
LIMIT_MIB=60

download() {
  local tmp; tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  local platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
                   --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  rm -rf .carry/ray .carry/deps && mkdir -p .carry/ray .carry/deps
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$tmp/ray" "$RAY"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .carry/deps "${DEPS[@]}"
  # DeepSpeed ships an sdist only; without build isolation it builds against the torch installed here,
  # and with no DS_BUILD_* variables set it compiles nothing (ops are JIT-built where they run).
  python3 -m pip wheel -q --no-deps --no-build-isolation -w .carry/deps "$DEEPSPEED"
  repack_ray "$tmp/ray"/ray-*.whl .carry/ray/ray-slim.zip
  for part in .carry/ray .carry/deps; do
    local mib; mib=$(du -sm "$part" | cut -f1)
    echo "$part: ${mib} MiB ($(ls "$part" | wc -l) files)"
    if (( mib > LIMIT_MIB )); then echo "$part is over ${LIMIT_MIB} MiB: split it" >&2; exit 1; fi
  done
}

repack_ray() {  # <ray wheel> <out zip>: the wheel minus the parts the job never imports
  local wheel=$1 out=$2 dir; dir=$(mktemp -d)
  python3 -m zipfile -e "$wheel" "$dir"
  rm -rf "$dir"/ray/jars "$dir"/ray/rllib "$dir"/ray/serve "$dir"/ray/llm "$dir"/ray/dashboard/client/build
  (cd "$dir" && python3 -m zipfile -c "$OLDPWD/$out" ray ray-*.dist-info)
  rm -rf "$dir"
}

install() {
  mkdir -p "$SITE"
  local found=0
  for f in .carry/ray/*.zip .carry/deps/*.whl; do
    [[ -e $f ]] || continue
    python3 -m zipfile -e "$f" "$SITE"
    found=1
  done
  if (( ! found )); then echo "nothing carried: pass carry [\".carry/ray\", \".carry/deps\"]" >&2; exit 2; fi
  # zipfile drops file modes: raylet, gcs_server and the other Ray binaries must be executable
  [[ -d $SITE/ray/core ]] && find "$SITE/ray/core" -type f -exec chmod +x {} +
  PYTHONPATH=$SITE python3 - <<'EOF'
import importlib
for name in ("ray", "deepspeed", "datasets", "pydantic", "jsonschema"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001 - report every missing part, not the first
        print(f"{name}: not importable yet ({type(e).__name__}: {e})")
EOF
}

case "${1:-}" in
  download) download ;;
  install) install ;;
  *) echo "usage: $0 download|install" >&2; exit 2 ;;
esac
