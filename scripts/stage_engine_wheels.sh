#!/usr/bin/env bash
# Stage, on a machine with network, the wheels tests/leank_core needs on the GPU machine beyond what it has:
# datasets (for tests/leank_core/tasks) and the three small libraries it adds there (dill, multiprocess,
# xxhash), as Python 3.12 wheels in .carry/engine-wheels (git-ignored; pass it to the device run as carry).
# scripts/device_engine.sh unpacks them when present.
set -euo pipefail
dest=.carry/engine-wheels
mkdir -p "$dest"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$dest" datasets==5.2.0 "dill>=0.3.0,<0.4.2" "multiprocess<0.70.20" xxhash
ls -la "$dest"
