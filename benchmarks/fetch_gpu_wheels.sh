#!/usr/bin/env bash
# Download, on a machine with PyPI access and the project's virtualenv active, the wheels that
# the offline GPU image lacks (CPython 3.12, x86_64) into .whl/, pinned to the versions
# installed here; gpu_check.sh installs them first. transformers is not carried: 5.25 needs
# huggingface-hub >= 2.4 (and httpx2, a newer hf-xet, click), which would push the carried
# wheels past the device tool's 64 MiB, so the image's transformers (5.17) is used.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
pkgs=(peft trl bitsandbytes datasets dill multiprocess xxhash math-verify latex2sympy2_extended
      antlr4-python3-runtime pydantic pydantic-core annotated-types typing-inspection)
pinned=()
for p in "${pkgs[@]}"; do
  pinned+=("$p==$(python -c "import importlib.metadata as m; print(m.version('$p'))")")
done
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${pinned[@]}"
ls .whl
