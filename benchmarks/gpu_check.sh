#!/usr/bin/env bash
# GPU check for one CUDA GPU, under 9 minutes (a shared deadline caps every stage); prints one
# JSON summary at the end. Stages, most important first:
#   0. gpu_decode.py: decode tokens/s of HF generate vs our fast engine, eager and with CUDA
#      graphs (0.5B and 7B shapes), graphs with and without compaction when rows stop early, and
#      whether graphs decode exactly as eager; the stages below use `--cuda-graphs` only if they do
#   1. bench_vs_trl.py on a 0.5B-shaped random-init Qwen2 (Qwen2.5-0.5B config, no hub), the
#      generation-heavy setting (48-token prompts, 64 new tokens) with our fast engine and prefix
#      sharing, full fine-tune and LoRA, against TRL's GRPOTrainer in the same run (again
#      without graphs and prefix sharing if that fails)
#   2. one QLoRA GRPO step of a 7B-shaped random-init model, 16 completions x 1,024 tokens with
#      the fast engine; falls back to the 3B shape if the 7B step fails or runs out of its slot
#   3. FSDP2 on the GPU: the tiny preset under `torchrun --nproc_per_node 1` with the launcher's
#      FSDP2 environment (one GPU: a mesh of one, the same code as several)
#   4. long_prompt_decode.py: 8 prompts of 2,048 tokens x 8 samples x 128 tokens on the 0.5B
#      shape's layers, HF generate vs the fast engine (its prompt cache kept once per prompt)
#   5. the GPU-relevant tests with CUDA visible (the trainer uses cuda), with the time left
# Offline GPU machines: put wheels of missing packages in .whl/ and they are installed first.
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check_out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
t0=$(date +%s)   # the deadline below counts from here: wheel install and GPU probe included

if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())" \
  > "$out/gpu.txt" 2>&1 || { cat "$out/gpu.txt"; echo '{"error": "no CUDA GPU or torch"}'; exit 1; }

deadline=${GPU_CHECK_SECONDS:-560}
left() { local l=$(( deadline - ($(date +%s) - t0) )); (( l < 1 )) && l=1; (( l < $1 )) && echo "$l" || echo "$1"; }

timeout -k 10 "$(left 150)" $PY benchmarks/gpu_decode.py --json "$out/decode.json" > "$out/decode.log" 2>&1; decode_rc=$?
graphs=""   # CUDA graphs for the runs below only if they decoded exactly as eager on the GPU
$PY -c "import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))['equal_small_fp32']['graphs_vs_eager'] else 1)" \
  "$out/decode.json" 2>/dev/null && graphs="--cuda-graphs"
no_graphs=(); [ -z "$graphs" ] && no_graphs=(-o generation.cuda_graphs=false)   # the default is on

bench() { timeout -k 10 "$(left 170)" $PY benchmarks/bench_vs_trl.py --device cuda --steps 4 --repeats 1 --hidden 896 --layers 24 \
  --heads 14 --kv-heads 2 --intermediate 4864 --vocab 151936 --gen-heavy --engine fast "$@" --json "$out/bench.json"; }
bench $graphs --prefix-sharing > "$out/bench.log" 2>&1; bench_rc=$?
if [ $bench_rc -ne 0 ] && (( $(left 999) > 330 )); then   # without graphs and prefix sharing
  bench >> "$out/bench.log" 2>&1; bench_rc=$?
fi

shape=7b
timeout -k 10 "$(left 200)" $PY benchmarks/gpu_qlora_step.py --shape 7b --engine fast $graphs --completions 16 --workdir /tmp/rlr_q7b > "$out/qlora.log" 2>&1; q_rc=$?
rm -rf /tmp/rlr_q7b
if [ $q_rc -ne 0 ] && (( $(left 999) > 150 )); then
  shape=3b
  timeout -k 10 "$(left 120)" $PY benchmarks/gpu_qlora_step.py --shape 3b --engine fast --completions 16 --workdir /tmp/rlr_q3b >> "$out/qlora.log" 2>&1; q_rc=$?
fi

ACCELERATE_USE_FSDP=true FSDP_VERSION=2 timeout -k 10 "$(left 70)" $PY -m torch.distributed.run --nproc_per_node 1 \
  -m rlrecipes train recipes/grpo.yaml --preset tiny -o train.steps=4 -o eval.limit=32 "${no_graphs[@]}" --output-dir /tmp/rlr_fsdp \
  > "$out/fsdp.log" 2>&1; fsdp_rc=$?
fsdp_line=$(grep -E "distributed:|pass@1 .* ->" "$out/fsdp.log" | tr '\n' ' ')

timeout -k 10 "$(left 60)" $PY benchmarks/long_prompt_decode.py --prompt-lens 2048 --prompts 8 --group 8 --new 128 \
  --hidden 896 --layers 24 --heads 14 --kv-heads 2 --repeats 1 $graphs > "$out/long_prompt.log" 2>&1
long_line=$(grep -E "^ *2048 " "$out/long_prompt.log" | tr -s ' ' | tr '\n' ';')

xdist=""; $PY -c "import xdist" 2>/dev/null && xdist="-n 12 --dist load"
timeout -k 10 "$(left 140)" $PY -m pytest -v -p no:cacheprovider $xdist tests/test_trainer.py tests/test_prefix.py \
  tests/test_checkpoint.py tests/test_credit.py tests/test_model.py tests/test_generate.py tests/test_logprobs.py \
  tests/test_export.py tests/test_brpo.py tests/test_mixed_groups.py tests/test_engine.py > "$out/tests.log" 2>&1; tests_rc=$?
# the failing tests' names go into the summary itself (a pytest cut by its timeout prints no summary)
tests_failed=$(grep -E '(FAILED|ERROR) tests/' "$out/tests.log" | grep -oE 'tests/[^ ]+' | sort -u | tr '\n' ' ')
tests_line="$(grep -c ' PASSED ' "$out/tests.log") passed, $(wc -w <<< "$tests_failed") failed or errors; $(grep -E 'passed|failed' "$out/tests.log" | tail -1)"
elapsed=$(( $(date +%s) - t0 ))

$PY - "$out" "$tests_rc" "$tests_line" "$bench_rc" "$q_rc" "$shape" "$elapsed" "$fsdp_rc" "$fsdp_line" "$decode_rc" \
  "$tests_failed" "$long_line" <<'PY'
import json, sys
from pathlib import Path
out, tests_rc, tests_line, bench_rc, q_rc, shape, elapsed, fsdp_rc, fsdp_line, decode_rc, tests_failed, long_line = sys.argv[1:]
decode = Path(out, "decode.json")
summary = {"gpu": Path(out, "gpu.txt").read_text().strip(), "elapsed_s": int(elapsed),
           "decode": json.loads(decode.read_text()) if decode.exists() else {"rc": int(decode_rc)},
           "tests": {"rc": int(tests_rc), "result": tests_line, "failed": tests_failed.split()},
           "fsdp2_one_gpu": {"rc": int(fsdp_rc), "log": fsdp_line},
           "long_prompt_2048": long_line.split(";")}
bench = Path(out, "bench.json")
summary["bench_0p5b"] = json.loads(bench.read_text()) if bench.exists() else {"rc": int(bench_rc)}
q = [l for l in Path(out, "qlora.log").read_text().splitlines() if l.startswith("RESULT ")]
summary["qlora_step"] = json.loads(q[-1][7:]) if q else {"rc": int(q_rc), "shape": shape}
text = json.dumps(summary, indent=2)
Path(out, "summary.json").write_text(text)
print(text)
PY
# the device tool returns at most 8 files: drop what summary.json already holds
rm -f "$out/gpu.txt" "$out/decode.json" "$out/bench.json"
