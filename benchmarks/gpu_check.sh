#!/usr/bin/env bash
# GPU check for one CUDA GPU, under 9 minutes (a shared deadline caps every stage); prints one
# JSON summary at the end.
#   1. the test suite with CUDA visible (4 xdist workers; the trainer uses cuda, the torchrun
#      test stays on CPU/gloo)
#   2. bench_vs_trl.py on a 0.5B-shaped random-init Qwen2 (Qwen2.5-0.5B config, no hub), the
#      generation-heavy setting (48-token prompts, 64 new tokens) with our fast engine
#   3. one QLoRA GRPO step of a 7B-shaped random-init model, 16 completions x 1,024 tokens with
#      the fast engine; falls back to the 3B shape if the 7B step fails or runs out of its slot
# Offline GPU machines: put wheels of missing packages in .whl/ and they are installed first.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check_out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}

if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())" \
  > "$out/gpu.txt" 2>&1 || { cat "$out/gpu.txt"; echo '{"error": "no CUDA GPU or torch"}'; exit 1; }

t0=$(date +%s)
deadline=${GPU_CHECK_SECONDS:-530}
left() { local l=$(( deadline - ($(date +%s) - t0) )); (( l < $1 )) && echo "$l" || echo "$1"; }
xdist=""; $PY -c "import xdist" 2>/dev/null && xdist="-n 4 --dist loadfile"
timeout "$(left 180)" $PY -m pytest -q -p no:cacheprovider $xdist > "$out/tests.log" 2>&1; tests_rc=$?
tests_line=$(grep -E "passed|failed|error" "$out/tests.log" | tail -1)

timeout "$(left 160)" $PY benchmarks/bench_vs_trl.py --device cuda --steps 4 --repeats 1 --hidden 896 --layers 24 --heads 14 \
  --kv-heads 2 --intermediate 4864 --vocab 151936 --gen-heavy --engine fast --json "$out/bench.json" > "$out/bench.log" 2>&1; bench_rc=$?

shape=7b
timeout "$(left 240)" $PY benchmarks/gpu_qlora_step.py --shape 7b --engine fast --completions 16 --workdir /tmp/rlr_q7b > "$out/qlora.log" 2>&1; q_rc=$?
if [ $q_rc -ne 0 ] && (( $(left 999) > 90 )); then
  rm -rf /tmp/rlr_q7b; shape=3b
  timeout "$(left 150)" $PY benchmarks/gpu_qlora_step.py --shape 3b --engine fast --completions 16 --workdir /tmp/rlr_q3b >> "$out/qlora.log" 2>&1; q_rc=$?
fi
elapsed=$(( $(date +%s) - t0 ))

$PY - "$out" "$tests_rc" "$tests_line" "$bench_rc" "$q_rc" "$shape" "$elapsed" <<'PY'
import json, sys
from pathlib import Path
out, tests_rc, tests_line, bench_rc, q_rc, shape, elapsed = sys.argv[1:]
summary = {"gpu": Path(out, "gpu.txt").read_text().strip(), "elapsed_s": int(elapsed),
           "tests": {"rc": int(tests_rc), "result": tests_line}}
bench = Path(out, "bench.json")
summary["bench_0p5b"] = json.loads(bench.read_text()) if bench.exists() else {"rc": int(bench_rc)}
q = [l for l in Path(out, "qlora.log").read_text().splitlines() if l.startswith("RESULT ")]
summary["qlora_step"] = json.loads(q[-1][7:]) if q else {"rc": int(q_rc), "shape": shape}
text = json.dumps(summary, indent=2)
Path(out, "summary.json").write_text(text)
print(text)
PY
