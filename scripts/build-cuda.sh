#!/usr/bin/env bash
# Builds attncache with the CUDA backend (`--features cuda`) on a machine with
# no GPU and no CUDA install: the CUDA 13.0 compiler, headers and libraries
# come from NVIDIA's PyPI wheels, fetched once into a local toolkit folder.
#
#   scripts/build-cuda.sh            # -> target/cuda/release/attncache
#
# Environment:
#   CUDA_COMPUTE_CAP     GPU architecture the kernels are compiled for (default 90: H100/H200)
#   ATTNCACHE_CUDA_ROOT  where the toolkit is unpacked (default target/cuda-toolkit)
#   ATTNCACHE_PYTHON     the python with pip (default python3)
#
# At run time the binary needs the NVIDIA driver (libcuda.so.1, driver >= 580
# for CUDA 13.0) and the CUDA 13 libraries libcublas.so.13, libcublasLt.so.13,
# libcurand.so.10 and libnvrtc.so.13 on the library path (the same wheels, or
# a CUDA 13 toolkit; PyTorch's cu13 wheels ship them as well).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="${ATTNCACHE_CUDA_ROOT:-$PWD/target/cuda-toolkit}"
PYTHON="${ATTNCACHE_PYTHON:-python3}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

# CUDA 13.0 (the newest the 580 driver series runs), pinned.
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35
  nvidia-cublas==13.0.2.14
)
CUDA="$ROOT/nvidia/cu13"

if [ ! -f "$ROOT/.complete" ]; then
  echo "fetching the CUDA 13.0 toolkit wheels into $ROOT (about 600 MB)" >&2
  rm -rf "$ROOT" && mkdir -p "$ROOT/wheels"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
    -d "$ROOT/wheels" "${WHEELS[@]}"
  for wheel in "$ROOT"/wheels/*.whl; do
    "$PYTHON" -m zipfile -e "$wheel" "$ROOT"
  done
  chmod +x "$CUDA"/bin/* "$CUDA"/nvvm/bin/*
  # Unversioned names for the linker.
  for lib in cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13 cudart.so.13; do
    ln -sf "lib$lib" "$CUDA/lib/lib${lib%%.so*}.so"
  done
  touch "$ROOT/.complete"
fi

# The driver library (libcuda.so.1) comes with the GPU's driver, not with the
# toolkit: link against a stub that defines the symbols cudarc binds, as the
# CUDA toolkit's own lib/stubs/libcuda.so does. The real driver is loaded at
# run time.
if [ ! -f "$CUDA/lib/stubs/libcuda.so" ]; then
  cargo fetch --quiet
  CUDARC="$(cargo metadata --format-version 1 --features cuda |
    "$PYTHON" -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')"
  mkdir -p "$CUDA/lib/stubs"
  grep -o 'fn cu[A-Za-z0-9_]*(' "$(dirname "$CUDARC")/src/driver/sys/mod.rs" | sort -u |
    sed 's/^fn \(.*\)($/int \1(void) { return 999; }/' >"$CUDA/lib/stubs/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/stubs/libcuda.so" "$CUDA/lib/stubs/cuda_stub.c"
fi

export CUDA_HOME="$CUDA" CUDA_PATH="$CUDA"
export PATH="$CUDA/bin:$PATH"
export LD_LIBRARY_PATH="$CUDA/lib:${LD_LIBRARY_PATH:-}"
nvcc --version | tail -2 >&2
cargo build --release --features cuda --target-dir target/cuda "$@"
echo "built target/cuda/release/attncache for compute capability $CUDA_COMPUTE_CAP" >&2
