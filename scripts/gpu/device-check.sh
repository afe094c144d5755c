#!/usr/bin/env bash
# The GPU checks of issue 7 in one run, for a machine with an NVIDIA GPU (the device tool runs it in
# the repository root). Nothing here is needed or run on CPU-only machines or in CI.
#
#   1. builds the native targets that need no Node-API (cmake; nvcc, the CUDA runtime, OpenBLAS):
#      the check programs below and the CPU emulation gm_gpu_model_emul, into native/build-gpu;
#   2. gm_cuda_host_check: the device, the caching allocator, bf16 upload/download, cuBLASLt GEMMs
#      (every transpose and type combination) against a host loop, NCCL loading;
#   3. gm_cuda_kernel_check: every launcher of kernels.h against the CPU ops (232 checks: fp32 within
#      1e-4, bf16 within 1e-2), the same program the emulation runs as gm_cuda_emul;
#   4. gm_gpu_model_check: the GPU model against the CPU Model on the same fixtures (tensor table,
#      hidden states, logits, loss, every gradient, two AdamW steps; fp32 within 1e-4, bf16 within the
#      stated tolerances), determinism, both mixers and every combine mode, 2 ranks x 2 rows = 1 x 4
#      on one GPU (two models sharing it), and with 2+ GPUs and NCCL: R GPUs x 2 rows = 1 x 2R rows
#      through NcclComm and a stalled rank failing the others within the timeout;
#   5. gm_gpu_scan_bench: the scan kernels' GB/s against the device's peak;
#   6. gm_gpu_train_bench, bf16 and fp32: bench:gpu's measurement without Node (genemamba-24l-512d,
#      L 2048, batch 24: s/sample, tokens/s, TFLOP/s, MFU, the allocator's peak), for machines that
#      have no node_modules;
#   7. with node_modules and the addon present: `npm run bench:gpu` (the same, plus PyTorch + mamba_ssm).
# Each program runs under `timeout` (GM_CHECK_TIMEOUT_S, 240 s) so that a hang cannot eat the budget.
# Every program prints JSON lines; all of it lands in $OUT (or ./gpu-check-out) for the record.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
BUILD="${GM_GPU_BUILD_DIR:-native/build-gpu}"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

log "$(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -4 | tr '\n' ';')"
if ! cmake -S native -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGM_CUDA=ON -DGM_CUDA_ARCHS="${GM_CUDA_ARCHS:-90}" >"$OUT/configure.log" 2>&1; then
  log "configure failed (tail):"; tail -20 "$OUT/configure.log" | tee -a "$OUT/summary.txt"; exit 1
fi
if ! cmake --build "$BUILD" -j"$(nproc)" --target gm_cuda_host_check gm_cuda_kernel_check gm_gpu_model_check gm_gpu_model_emul gm_gpu_scan_bench gm_gpu_train_bench >"$OUT/build.log" 2>&1; then
  log "build failed (tail):"; tail -30 "$OUT/build.log" | tee -a "$OUT/summary.txt"; exit 1
fi
rc=0
run() {  # name, command...
  local name=$1; shift
  local t0=$SECONDS
  timeout "${GM_CHECK_TIMEOUT_S:-240}" "$@" >"$OUT/$name.jsonl" 2>"$OUT/$name.stderr"; local r=$?
  log "$name: exit $r in $((SECONDS - t0)) s; $(tail -1 "$OUT/$name.jsonl")"
  grep '"ok":false' "$OUT/$name.jsonl" | head -20 | tee -a "$OUT/summary.txt"
  [ $r -eq 0 ] || rc=1
}
run host_check "$BUILD/gm_cuda_host_check"
run kernel_check "$BUILD/gm_cuda_kernel_check"
run gpu_model_check "$BUILD/gm_gpu_model_check"
run gpu_scan_bench "$BUILD/gm_gpu_scan_bench"
run train_bench_bf16 env GM_BENCH_DTYPE=bf16 "$BUILD/gm_gpu_train_bench"
run train_bench_fp32 env GM_BENCH_DTYPE=float32 "$BUILD/gm_gpu_train_bench"
if [ -d node_modules ] && [ -f native/build/Release/gm_native.node ]; then
  GM_BENCH_RECORD=1 timeout "${GM_BENCH_TIMEOUT_S:-300}" npm run -s bench:gpu >"$OUT/bench_gpu.txt" 2>&1; log "bench:gpu: exit $? (tail):"
  tail -15 "$OUT/bench_gpu.txt" | tee -a "$OUT/summary.txt"
else
  log "bench:gpu skipped: no node_modules or addon here (npm run setup needs the npm registry)"
fi
exit $rc
