#!/usr/bin/env bash
# One command for the GPU machine: configure + build (Release, sm_80 + sm_90a), GPU tests,
# compute-sanitizer (memcheck + racecheck) on a small subset, the benchmark, and a compact table last.
# Usage (from the repo root, on the device machine, with .deps carried):
#   bash bench/device.sh [--skip-tests] [--skip-sanitizer] [--skip-bench] [--gtest-filter F] [--bench-args "..."]
# Logs go to $OUT (or ./out) so they come back from the device tool.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out}"
mkdir -p "$OUT"
SKIP_TESTS=0 SKIP_SAN=0 SKIP_BENCH=0 FILTER="*" BENCH_ARGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-tests) SKIP_TESTS=1 ;;
    --skip-sanitizer) SKIP_SAN=1 ;;
    --skip-bench) SKIP_BENCH=1 ;;
    --gtest-filter) FILTER="$2"; shift ;;
    --bench-args) BENCH_ARGS="$2"; shift ;;
    *) echo "unknown option $1"; exit 2 ;;
  esac
  shift
done
BUILD=build-device
summary=()
deps=()
[ -d .deps/googletest ] && deps+=(-DQKV2CTX_GTEST_SOURCE="$PWD/.deps/googletest")
[ -d .deps/include ] && deps+=(-DQKV2CTX_THIRD_PARTY_INCLUDE="$PWD/.deps/include")
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv,noheader | tee "$OUT/gpu.txt"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
t0=$(date +%s)
if ! cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DQKV2CTX_CUDA=ON "${deps[@]}" >"$OUT/configure.log" 2>&1; then
  tail -30 "$OUT/configure.log"; echo "CONFIGURE FAILED"; exit 1
fi
if ! cmake --build "$BUILD" -j "$(nproc)" >"$OUT/build.log" 2>&1; then
  grep -E "error|Error" "$OUT/build.log" | head -40; echo "BUILD FAILED"; exit 1
fi
summary+=("build: ok ($(( $(date +%s) - t0 )) s)")

if [ $SKIP_TESTS = 0 ]; then
  "$BUILD/tests/qkv2ctx_cpu_tests" --gtest_brief=1 >"$OUT/cpu_tests.log" 2>&1; rc=$?
  summary+=("cpu tests: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/cpu_tests.log" | tr '\n' ' ') rc=$rc")
  if [ -x "$BUILD/tests/qkv2ctx_gpu_tests" ]; then
    "$BUILD/tests/qkv2ctx_gpu_tests" --gtest_filter="$FILTER" >"$OUT/gpu_tests.log" 2>&1; rc=$?
    grep -E "FAILED|mismatch|Failure" "$OUT/gpu_tests.log" | head -30
    summary+=("gpu tests: $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$OUT/gpu_tests.log" | tr '\n' ' ') rc=$rc")
  else
    summary+=("gpu tests: not built")
  fi
fi

if [ $SKIP_SAN = 0 ] && [ -x "$BUILD/tests/qkv2ctx_gpu_tests" ]; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 1 "$BUILD/tests/qkv2ctx_gpu_tests" \
      --gtest_filter="*Sanitizer*" >"$OUT/sanitizer_$tool.log" 2>&1; rc=$?
    summary+=("compute-sanitizer $tool: $(grep -E 'SUMMARY' "$OUT/sanitizer_$tool.log" | tail -1) rc=$rc")
  done
fi

# The unfused softmax kernel's share of HBM bandwidth at S = 512 (issue bar: >= 70%), from ncu.
if [ $SKIP_BENCH = 0 ] && command -v ncu >/dev/null && [ -x "$BUILD/tools/qkv2ctx/qkv2ctx" ]; then
  ncu --kernel-name regex:softmax --launch-count 1 \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed \
    "$BUILD/tools/qkv2ctx/qkv2ctx" run --backend cuda-unfused --dtype fp16 --heads 12 --head-size 64 \
    --seqlen 512 --batch 32 --mask none >"$OUT/ncu_softmax.log" 2>&1
  summary+=("unfused softmax S=512 fp16 (ncu): $(grep -E 'dram__throughput|gpu__time_duration' "$OUT/ncu_softmax.log" | awk '{print $1, $(NF-1), $NF}' | tr '\n' ' ')")
fi

if [ $SKIP_BENCH = 0 ] && [ -x "$BUILD/tools/qkv2ctx/qkv2ctx" ]; then
  "$BUILD/tools/qkv2ctx/qkv2ctx" bench --shapes bench/shapes.csv --csv "$OUT/bench.csv" \
    --torch-baselines bench/torch_baselines.py $BENCH_ARGS >"$OUT/bench.log" 2>&1; rc=$?
  summary+=("bench: rc=$rc (table below, full log in bench.log)")
fi

echo
echo "================ summary ================"
printf '%s\n' "${summary[@]}"
[ -f "$OUT/bench.log" ] && { echo; tail -40 "$OUT/bench.log"; }
exit 0
