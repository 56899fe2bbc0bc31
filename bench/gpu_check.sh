#!/usr/bin/env bash
# lorakit on one CUDA GPU, on the device machine as it is (Python 3.12, torch, transformers, peft,
# accelerate preinstalled; no network, no apt, no espeak-ng). What travels: the working tree plus the
# ignored .whl/ (wheels) and .gpu_data/ (demo subset, tokenizer), both made by bench/gpu_prepare.sh.
#
#   bash bench/gpu_check.sh                   # there, from the repo root: results in $OUT (else ./gpu_results)
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh   # here, without a GPU: every stage on the CPU at toy sizes,
#                                             # check-wheels instead of the install (the wheels are cp312)
#
# Stages, each with its own timeout inside one budget (GPU_CHECK_BUDGET, default 360 s, so that a rerun
# fits in the same 15-minute lease; a dry run has three times every timeout and the budget, the CPU
# being much slower), each exit code in summary.json; a failing stage does not stop the others.
# GPU_CHECK_ONLY="pytest-gpu bench-eval" reruns some stages (install, env and model always run):
#   install        the wheels into /tmp/site (PYTHONPATH; lorakit itself from the checkout)
#   env            nvidia-smi, versions, GPU, every carried package imported
#   model          tiny.en's architecture with random weights, end-of-text suppressed (bench/gpu_data.py)
#   pytest-gpu     pytest -m gpu tests/test_gpu.py
#   demo-papermill bench/gpu_demo.yaml through `python -m lorakit run` (papermill, notebooks/train.ipynb),
#                  cold caches: wall time, WERs, peak GPU memory from nvidia-smi samples
#   bench-train    bench/bench.py train-hf, train-lorakit, train-nocache, train-full (bf16)
#   bench-eval     bench/bench.py eval-batch1, eval-lorakit (bf16): throughput, identical hypotheses
#   demo-direct    the same recipe through train.run in one process, warm shared caches: torch's GPU peak
#   bench-eval-fp32  eval-batch1, eval-lorakit in fp32 (hypotheses compared without bf16 rounding)
# Files in $OUT (default /tmp/gpu_results; at most 8 come back from a device call): gpu_check.log, pytest_gpu.txt, run_metrics.json, demo_run.ipynb,
# bench_cuda.json, bench_cuda_eval_fp32.json, summary.json.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/gpu_results}
DRY=${GPU_CHECK_DRY:-0}
BUDGET=${GPU_CHECK_BUDGET:-360}
ONLY=${GPU_CHECK_ONLY:-}
PY=${PY:-python3}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check}
mkdir -p "$OUT" && rm -rf "$WORK" && mkdir -p "$WORK"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PY ROOT OUT WORK PYTHONUNBUFFERED=1 LORAKIT_ROOT=$ROOT LORAKIT_CACHE=$WORK/cache TOKENIZERS_PARALLELISM=false \
       HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH=$ROOT
MODEL=$WORK/model-tinyen-random
if [ "$DRY" = 1 ]; then
  DEVICE=cpu PRECISION=fp32 FP32_EVAL_N=2 SCALE=3
  SIZES="--train-n 4 --steps 1 --batch-size 2 --eval-n 2 --eval-batch-size 2 --max-new-tokens 4"
  DEMO="-p device cpu -p precision fp32 -p max_train_utterances 8 -p min_train_clips 2 -p max_steps 2 -p eval_interval 2"
  DEMO="$DEMO -p batch_size 2 -p max_eval_utterances 4 -p verify_best 2 -p max_new_tokens 4"
else
  DEVICE=cuda PRECISION=bf16 FP32_EVAL_N=48 SCALE=1
  SIZES="--train-n 256 --steps 32 --batch-size 8 --eval-n 96 --eval-batch-size 32 --max-new-tokens 24"
  DEMO=""
fi
BENCH="bench/bench.py --device $DEVICE --precision $PRECISION --model $MODEL --train .gpu_data/demo/train.jsonl"
BENCH="$BENCH --domain .gpu_data/demo/domain.jsonl"
BUDGET=$(( BUDGET * SCALE ))
export JUPYTER_RUNTIME_DIR=$WORK/jupyter IPYTHONDIR=$WORK/ipython MPLCONFIGDIR=$WORK/matplotlib
START=$(date +%s)

stage() {  # stage NAME SECONDS COMMAND: at most SECONDS (and what is left of the budget); exit code -> stages.tsv
  local name=$1 max=$(( $2 * SCALE )) cmd=$3 left t0 rc
  if [ -n "$ONLY" ] && [[ " install env model check-wheels $ONLY " != *" $name "* ]]; then
    printf '%s\tnot selected\t0\n' "$name" >>"$WORK/stages.tsv"; return
  fi
  left=$(( BUDGET - ($(date +%s) - START) ))
  if (( left < 20 )); then
    echo "### $name: skipped (budget of ${BUDGET}s spent)"; printf '%s\tskipped\t0\n' "$name" >>"$WORK/stages.tsv"; return
  fi
  (( max > left )) && max=$left
  echo "### $name (at most ${max}s): $cmd"
  t0=$(date +%s)
  timeout -k 10 "$max" bash -c "$cmd"  # timeout signals the stage's whole process group
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" $(( $(date +%s) - t0 )) >>"$WORK/stages.tsv"
  echo "### $name: exit $rc after $(( $(date +%s) - t0 ))s"
}

demo_papermill() {  # the path users take: `lorakit run RECIPE` executes notebooks/train.ipynb with papermill
  local t0 rc ms sampler=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$WORK/gpu_mem.txt" 2>/dev/null &
    sampler=$!
  fi
  t0=$(date +%s%N)
  "$PY" -m lorakit run bench/gpu_demo.yaml -p model "$MODEL" -p output_dir "$WORK/runs" $DEMO --quiet
  rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ -n "$sampler" ] && kill "$sampler"
  "$PY" bench/gpu_data.py collect-run "$WORK/runs/gpu-demo" --out "$OUT/run_metrics.json" --key papermill \
    --wall "$((ms / 1000)).$(printf %03d $((ms % 1000)))" --gpu-log "$WORK/gpu_mem.txt"
  cp "$WORK/runs/gpu-demo/run.ipynb" "$OUT/demo_run.ipynb" 2>/dev/null
  return $rc
}
export -f demo_papermill
export MODEL DEMO

echo "### gpu_check: $(date -u +%FT%TZ), dry=$DRY, device=$DEVICE, budget ${BUDGET}s, results in $OUT"
if [ "$DRY" = 1 ]; then
  stage check-wheels 60 '"$PY" bench/gpu_data.py check-wheels'
else
  stage install 60 '"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl'
  export PYTHONPATH=/tmp/site:$ROOT
fi
stage env 60 '(nvidia-smi || echo "no nvidia-smi"); "$PY" bench/gpu_data.py env --out "$WORK/env.json"'
stage model 60 '"$PY" bench/gpu_data.py random-model "$MODEL"'
stage pytest-gpu 120 'LORAKIT_CACHE=$ROOT/.gpu_data/cache "$PY" -m pytest -m gpu tests/test_gpu.py -q -rA -p no:cacheprovider \
  >"$OUT/pytest_gpu.txt" 2>&1; rc=$?; tail -15 "$OUT/pytest_gpu.txt"; exit $rc'
stage demo-papermill 100 demo_papermill
stage bench-train 120 "\"\$PY\" $BENCH $SIZES --only train-hf,train-lorakit,train-nocache,train-full --out \"\$OUT/bench_cuda.json\""
stage bench-eval 90 "\"\$PY\" $BENCH $SIZES --only eval-batch1,eval-lorakit --out \"\$OUT/bench_cuda.json\""
stage demo-direct 60 "\"\$PY\" bench/gpu_data.py run-direct bench/gpu_demo.yaml -p model \"\$MODEL\" -p output_dir \"\$WORK/runs\" \
  -p run_id gpu-demo-direct $DEMO --out \"\$OUT/run_metrics.json\" --key direct"
stage bench-eval-fp32 60 "\"\$PY\" $BENCH $SIZES --eval-n $FP32_EVAL_N --precision fp32 --only eval-batch1,eval-lorakit --out \"\$OUT/bench_cuda_eval_fp32.json\""
"$PY" bench/gpu_data.py summary "$OUT" --stages "$WORK/stages.tsv" --env "$WORK/env.json"
echo "### gpu_check: done after $(( $(date +%s) - START ))s"
