#!/usr/bin/env bash
# Gathers, on a machine with apt (and, optionally, a mamba source), what a lent GPU machine lacks and
# cannot download (it reaches no package registry), into .gpu-deps/ (git-ignored), for
#   run(command="bash scripts/gpu/device-check.sh", carry=[".gpu-deps"]):
#   - .gpu-deps/debs: Debian's OpenBLAS (OpenMP build, headers) and its Fortran runtime; the native
#     build needs cblas.h and libopenblas, and the GPU image has neither. device-check.sh unpacks
#     them with `dpkg -x` into .gpu-deps/root (never into /) when cmake finds no OpenBLAS of the system.
#   - .gpu-deps/py/mamba_ssm: the reference mamba_ssm package source (pure Python + Triton: its
#     default build compiles nothing), for the PyTorch + mamba_ssm peer of the benchmark
#     (scripts/bench/mamba_ssm_peer.py); the image has torch, triton and einops but not mamba_ssm.
#     GM_MAMBA_SRC: a git directory (bare or not) of state-spaces/mamba, or a folder holding mamba_ssm/.
# Nothing from here is committed or shipped: it is the GPU machine's toolchain, like its compiler.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEPS=.gpu-deps
mkdir -p "$DEPS/debs"
(cd "$DEPS/debs" && apt-get download libopenblas0-openmp libopenblas-openmp-dev libgfortran5 libquadmath0)
echo "fetch-deps: $(ls "$DEPS/debs" | tr '\n' ' ')"
src="${GM_MAMBA_SRC:-}"
if [ -z "$src" ]; then
  echo "fetch-deps: GM_MAMBA_SRC unset: no mamba_ssm (the benchmark then reports the peer as not available)"
  exit 0
fi
rm -rf "$DEPS/py" && mkdir -p "$DEPS/py"
if [ -d "$src/mamba_ssm" ]; then
  cp -r "$src/mamba_ssm" "$DEPS/py/"
  echo "folder $src" >"$DEPS/py/SOURCE.txt"
else
  git --git-dir="$src" archive HEAD mamba_ssm | tar -x -C "$DEPS/py"
  echo "git $(git --git-dir="$src" log -1 --format='%H %cs') (state-spaces/mamba)" >"$DEPS/py/SOURCE.txt"
fi
echo "fetch-deps: mamba_ssm $(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$DEPS/py/mamba_ssm/__init__.py") from $(cat "$DEPS/py/SOURCE.txt"); $(du -sh "$DEPS" | cut -f1) in $DEPS"
