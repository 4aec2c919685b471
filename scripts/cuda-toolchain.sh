#!/usr/bin/env bash
# A CUDA toolkit for building `pipe --features cuda` on a machine without one (and without a GPU),
# assembled from NVIDIA's PyPI wheels: nvcc, its device front end (nvvm), the runtime and CRT
# headers, CCCL, and the cuBLAS, cuRAND and NVRTC libraries candle links against.
#
#   scripts/cuda-toolchain.sh [DEST]        # default DEST: /work/cuda-toolchain
#   eval "$(scripts/cuda-toolchain.sh [DEST] --env)"   # only print the environment (after a first run)
#
# What it does, in DEST:
#   wheels/  the wheels, fetched with `pip download` (PyPI only; skipped when already there)
#   site/    the wheels installed with `pip install --no-index --target` (no other network)
#   cuda  -> site/nvidia/cu13, a CUDA_HOME: bin/nvcc, include/, lib64/ (-> lib), nvvm/
#            plus unversioned .so links for the linker and lib64/stubs/libcuda.so (see below)
# and prints the variables to export. CI does not run this: the CUDA build is a documented,
# scripted step (README, "GPU (CUDA) build").
#
# Versions: CUDA 13.0 Update 2. The lent GPU machine's driver is CUDA 13.0 (580.x), and a driver
# refuses PTX from a newer compiler, so nvcc must not be newer than 13.0. The libraries are only
# linked here; at run time the GPU machine's own (PyTorch's cu130 wheels) are used.
#
# libcuda is the driver and ships with it, not in any wheel. Linking needs a library with its
# soname (libcuda.so.1) that defines the driver-API symbols cudarc references: the stub is built
# from cuda.h (every `cu*` function the preprocessed header declares, each returning
# CUDA_ERROR_STUB_LIBRARY = 34, as NVIDIA's own stub does). It lives in lib64/stubs and must
# never be on LD_LIBRARY_PATH on a machine with a GPU: there the driver's libcuda.so.1 is found.
# On a machine without a driver, putting the stub on LD_LIBRARY_PATH lets the CUDA binary start
# and fall back to the CPU (`device: auto`), which is how this build is smoke-tested here.
set -euo pipefail

DEST="${1:-/work/cuda-toolchain}"
MODE="${2:-}"
if [[ "$DEST" == "--env" ]]; then
    DEST=/work/cuda-toolchain
    MODE=--env
fi
PYTHON="${PYTHON:-python3}"

NVCC=13.0.88
NVVM=13.0.88
CUDART=13.0.96
CRT=13.0.88
CCCL=13.0.85
NVRTC=13.0.88
CUBLAS=13.1.0.3
CURAND=10.4.0.35
WHEELS=(
    "nvidia-cuda-nvcc==$NVCC"
    "nvidia-nvvm==$NVVM"
    "nvidia-cuda-runtime==$CUDART"
    "nvidia-cuda-crt==$CRT"
    "nvidia-cuda-cccl==$CCCL"
    "nvidia-cuda-nvrtc==$NVRTC"
    "nvidia-cublas==$CUBLAS"
    "nvidia-curand==$CURAND"
)

print_env() {
    local home="$1"
    cat <<EOF
export CUDA_HOME="$home"
export CUDA_PATH="$home"
export PATH="$home/bin:\$PATH"
export LIBRARY_PATH="$home/lib64:$home/lib64/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP=90
export CUDARC_CUDA_VERSION=13000
EOF
    echo "# To run the CUDA binary on a machine WITHOUT a GPU driver (it then falls back to the CPU):" >&2
    echo "#   export LD_LIBRARY_PATH=\"$home/lib64:$home/lib64/stubs\"" >&2
}

mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
HOME_DIR="$DEST/cuda"
if [[ "$MODE" == "--env" ]]; then
    [[ -x "$HOME_DIR/bin/nvcc" ]] || { echo "error: no toolkit in $DEST; run scripts/cuda-toolchain.sh $DEST first" >&2; exit 1; }
    print_env "$HOME_DIR"
    exit 0
fi

log() { echo "cuda-toolchain: $*" >&2; }

# 1. The wheels (pip's own cache and the wheels/ folder make a rerun free).
mkdir -p "$DEST/wheels"
missing=()
for spec in "${WHEELS[@]}"; do
    name="${spec%%==*}"
    version="${spec##*==}"
    file_stem="${name//-/_}-$version-"
    compgen -G "$DEST/wheels/$file_stem*.whl" >/dev/null || missing+=("$spec")
done
if ((${#missing[@]})); then
    log "downloading ${missing[*]}"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
        -d "$DEST/wheels" "${missing[@]}"
fi

# 2. Installed into one tree (all of them unpack under nvidia/cu13/), from the local wheels only.
stamp="$DEST/site/.installed"
want="$(printf '%s\n' "${WHEELS[@]}")"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "installing the wheels into $DEST/site"
    rm -rf "$DEST/site"
    files=()
    for spec in "${WHEELS[@]}"; do
        name="${spec%%==*}"
        version="${spec##*==}"
        files+=("$(compgen -G "$DEST/wheels/${name//-/_}-$version-*.whl" | head -1)")
    done
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile \
        --target "$DEST/site" "${files[@]}"
    printf '%s\n' "${WHEELS[@]}" >"$stamp"
fi

# 3. The CUDA_HOME layout.
root="$DEST/site/nvidia/cu13"
[[ -x "$root/bin/nvcc" ]] || { echo "error: $root/bin/nvcc missing after install" >&2; exit 1; }
ln -sfn "$root" "$HOME_DIR"
ln -sfn lib "$root/lib64"
chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
# The linker looks for libX.so; the wheels ship only the sonames.
for lib in "$root"/lib/lib*.so.*; do
    base="$(basename "$lib")"
    case "$base" in *builtins* | *.alt.* | libnvblas*) continue ;; esac
    plain="${base%%.so.*}.so"
    [[ -e "$root/lib/$plain" ]] || ln -s "$base" "$root/lib/$plain"
done

# 4. The libcuda stub, from the driver API that cuda.h declares.
stubs="$root/lib/stubs"
if [[ ! -f "$stubs/libcuda.so" || "$root/include/cuda.h" -nt "$stubs/libcuda.so" ]]; then
    log "building the libcuda.so.1 stub"
    mkdir -p "$stubs"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    printf '#include <cuda.h>\n' >"$work/all.c"
    gcc -E -P -I"$root/include" "$work/all.c" |
        grep -oE '\b(CUresult|CUresult CUDAAPI)[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]*\(' |
        grep -oE 'cu[A-Za-z0-9_]+' | sort -u >"$work/symbols"
    count=$(wc -l <"$work/symbols")
    ((count > 300)) || { echo "error: only $count driver functions found in cuda.h" >&2; exit 1; }
    {
        echo "/* Generated by scripts/cuda-toolchain.sh: link-time stand-in for the CUDA driver. */"
        while read -r sym; do echo "int $sym(void) { return 34; /* CUDA_ERROR_STUB_LIBRARY */ }"; done <"$work/symbols"
    } >"$work/stub.c"
    gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$work/stub.c"
    ln -sfn libcuda.so "$stubs/libcuda.so.1"
    log "stub exports $count driver functions"
fi

# 5. A check that the compiler works for the target: one kernel to PTX and to sm_90 code.
"$HOME_DIR/bin/nvcc" --version | tail -2 >&2
check="$(mktemp -d)"
printf '__global__ void k(float *x) { x[threadIdx.x] *= 2.0f; }\n' >"$check/k.cu"
"$HOME_DIR/bin/nvcc" -gencode=arch=compute_90a,code=sm_90a --ptx -o "$check/k.ptx" "$check/k.cu"
grep -q '^.target sm_90a' "$check/k.ptx" || { echo "error: nvcc did not emit sm_90a PTX" >&2; exit 1; }
"$HOME_DIR/bin/nvcc" -arch=sm_90 -cubin -o "$check/k.cubin" "$check/k.cu"
rm -rf "$check"
log "nvcc $NVCC builds sm_90 PTX and cubins; toolkit at $HOME_DIR"

print_env "$HOME_DIR"
