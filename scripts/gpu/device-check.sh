#!/usr/bin/env bash
# The GPU checks of issue 7 in one run, for a machine with an NVIDIA GPU (the device tool runs it in
# the repository root). Nothing here is needed or run on CPU-only machines or in CI.
#
#   1. builds the native targets that need no Node-API (cmake; nvcc, the CUDA runtime, OpenBLAS):
#      the check programs below and the CPU emulation gm_gpu_model_emul, into native/build-gpu;
#   2. gm_cuda_host_check: the device, the caching allocator, bf16 upload/download, cuBLASLt GEMMs
#      (every transpose and type combination) against a host loop, NCCL loading;
#   3. gm_cuda_kernel_check: every launcher of kernels.h against the CPU ops (274 checks, 42 of them the SSD scan: fp32 within
#      1e-4, bf16 within 1e-2), the same program the emulation runs as gm_cuda_emul;
#   4. gm_gpu_model_check: the GPU model against the CPU Model on the same fixtures (tensor table,
#      hidden states, logits, loss, every gradient, two AdamW steps; fp32 within 1e-4, bf16 within the
#      stated tolerances), determinism, both mixers and every combine mode, 2 ranks x 2 rows = 1 x 4
#      on one GPU (two models sharing it), and with 2+ GPUs and NCCL: R GPUs x 2 rows = 1 x 2R rows
#      through NcclComm and a stalled rank failing the others within the timeout;
#   5. gm_gpu_scan_bench: the scan kernels' GB/s against the device's peak, the recurrent Mamba-2
#      scan beside the chunked SSD form (ssd.cu);
#   6. gm_gpu_train_bench, bf16 (recurrent scan, then GM_GPU_SCAN=ssd) and fp32: bench:gpu's measurement without Node (genemamba-24l-512d,
#      L 2048, batch 24: s/sample, tokens/s, TFLOP/s, MFU, the allocator's peak), for machines that
#      have no node_modules;
#   7. with node_modules and the addon present: `npm run bench:gpu` (the same, plus PyTorch + mamba_ssm).
#   8. PyTorch + mamba_ssm (scripts/bench/mamba_ssm_peer.py) where python3 has torch and finds
#      mamba_ssm (the system's, or .gpu-deps/py from scripts/gpu/fetch-deps.sh), then
#      scripts/gpu/compare.py: the table row for docs/benchmarks.md and the issue's targets.
# Each program runs under `timeout` (GM_CHECK_TIMEOUT_S, 240 s) so that a hang cannot eat the budget.
# OpenBLAS: the GPU image may have none and cannot download it; scripts/gpu/fetch-deps.sh (run where apt
# works) puts Debian's packages into .gpu-deps/, which the device call carries; they are unpacked
# with dpkg -x into .gpu-deps/root, never into /, and reach only our programs (LD_LIBRARY_PATH set
# per program, so python3 and torch keep their own libraries). GM_CHECK_CARRIED_BLAS=1 uses them even
# where the system has OpenBLAS (to test this path).
# Every program prints JSON lines. What comes back is at most 8 files, so everything lands in
# $OUT (or ./gpu-check-out) as: summary.txt, build.log, results.txt ('### name' + JSON lines per
# program), stderr.txt, peer.json, compare.md (and bench_gpu.txt when node_modules exist).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
BUILD="${GM_GPU_BUILD_DIR:-native/build-gpu}"
DEPS="$PWD/.gpu-deps"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

log "$(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -4 | tr '\n' ';')"
configure() { cmake -S native -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGM_CUDA=ON -DGM_CUDA_ARCHS="${GM_CUDA_ARCHS:-90}" "$@" >>"$OUT/build.log" 2>&1; }
GM_LD=""
unpack() {  # a .deb's files into $2, without dpkg where there is none
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$2"; else mkdir -p "$2" && ar p "$1" "$(ar t "$1" | grep '^data.tar')" | tar -x -J -C "$2"; fi
}
if [ "${GM_CHECK_CARRIED_BLAS:-0}" = 1 ] || ! configure; then
  if { [ "${GM_CHECK_CARRIED_BLAS:-0}" = 1 ] || grep -q "OpenBLAS not found" "$OUT/build.log"; } && ls "$DEPS"/debs/*.deb >/dev/null 2>&1; then
    root="$DEPS/root" lib="$DEPS/root/usr/lib/x86_64-linux-gnu"
    for f in "$DEPS"/debs/*.deb; do unpack "$f" "$root"; done
    GM_LD="$lib/openblas-openmp:$lib"
    log "$([ "${GM_CHECK_CARRIED_BLAS:-0}" = 1 ] && echo "GM_CHECK_CARRIED_BLAS=1" || echo "no OpenBLAS on the system"): using the carried Debian packages ($(ls "$DEPS"/debs | tr '\n' ' '))"
    rm -rf "$BUILD"
    configure -DOPENBLAS_LIBRARY="$lib/openblas-openmp/libopenblas.so" -DCBLAS_INCLUDE_DIR="$root/usr/include/x86_64-linux-gnu/openblas-openmp" \
      -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$lib" || { log "configure failed (tail):"; tail -20 "$OUT/build.log" | tee -a "$OUT/summary.txt"; exit 1; }
  else
    log "configure failed (tail):"; tail -20 "$OUT/build.log" | tee -a "$OUT/summary.txt"; exit 1
  fi
fi
t0=$SECONDS
if ! cmake --build "$BUILD" -j"$(nproc)" --target gm_cuda_host_check gm_cuda_kernel_check gm_gpu_model_check gm_gpu_model_emul gm_gpu_scan_bench gm_gpu_train_bench >>"$OUT/build.log" 2>&1; then
  log "build failed (tail):"; tail -30 "$OUT/build.log" | tee -a "$OUT/summary.txt"; exit 1
fi
log "built in $((SECONDS - t0)) s"
rc=0
run() {  # name, command...
  local name=$1; shift
  local t0=$SECONDS tmp="$OUT/.$name.out"
  echo "### $name" >>"$OUT/stderr.txt"
  LD_LIBRARY_PATH="$GM_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" timeout "${GM_CHECK_TIMEOUT_S:-240}" "$@" >"$tmp" 2>>"$OUT/stderr.txt"; local r=$?
  { echo "### $name"; cat "$tmp"; } >>"$OUT/results.txt"
  log "$name: exit $r in $((SECONDS - t0)) s; $(tail -1 "$tmp")"
  grep '"ok":false' "$tmp" | head -20 | tee -a "$OUT/summary.txt"
  rm -f "$tmp"
  [ $r -eq 0 ] || rc=1
}
run host_check "$BUILD/gm_cuda_host_check"
run kernel_check "$BUILD/gm_cuda_kernel_check"
run gpu_model_check "$BUILD/gm_gpu_model_check"
run gpu_scan_bench "$BUILD/gm_gpu_scan_bench"
run train_bench_bf16 env GM_BENCH_DTYPE=bf16 "$BUILD/gm_gpu_train_bench"
run train_bench_bf16_ssd env GM_BENCH_DTYPE=bf16 GM_GPU_SCAN=ssd "$BUILD/gm_gpu_train_bench"

# The peer, in bf16 like gm's row; out of memory (exit 3): half the batch.
PY="${GM_BENCH_PYTHON:-python3}"
[ -d "$DEPS/py/mamba_ssm" ] && export PYTHONPATH="$DEPS/py${PYTHONPATH:+:$PYTHONPATH}"
if "$PY" -c "import torch, mamba_ssm; assert torch.cuda.is_available()" 2>>"$OUT/stderr.txt"; then
  for b in 24 12 6; do
    t0=$SECONDS
    echo "### peer batch $b" >>"$OUT/stderr.txt"
    PYTHONUNBUFFERED=1 timeout "${GM_PEER_TIMEOUT_S:-300}" "$PY" scripts/bench/mamba_ssm_peer.py --batch "$b" --len 2048 --steps 10 --warmup 2 >"$OUT/peer.json" 2>>"$OUT/stderr.txt"; r=$?
    log "PyTorch + mamba_ssm, batch $b: exit $r in $((SECONDS - t0)) s; $(tail -c 400 "$OUT/peer.json")"
    [ $r -eq 3 ] || break
  done
else
  log "PyTorch + mamba_ssm: not available ($(tail -1 "$OUT/stderr.txt"))"
fi
"$PY" scripts/gpu/compare.py "$OUT/results.txt" "$OUT/peer.json" >"$OUT/compare.md" 2>>"$OUT/stderr.txt" && cat "$OUT/compare.md" | tee -a "$OUT/summary.txt"

run train_bench_fp32 env GM_BENCH_DTYPE=float32 "$BUILD/gm_gpu_train_bench"
"$PY" scripts/gpu/compare.py "$OUT/results.txt" "$OUT/peer.json" >"$OUT/compare.md" 2>>"$OUT/stderr.txt"
if [ -d node_modules ] && [ -f native/build/Release/gm_native.node ]; then
  GM_BENCH_RECORD=1 timeout "${GM_BENCH_TIMEOUT_S:-300}" npm run -s bench:gpu >"$OUT/bench_gpu.txt" 2>&1; log "bench:gpu: exit $? (tail):"
  tail -15 "$OUT/bench_gpu.txt" | tee -a "$OUT/summary.txt"
else
  log "bench:gpu skipped: no node_modules or addon here (gm_gpu_train_bench above measured the same step)"
fi
exit $rc
