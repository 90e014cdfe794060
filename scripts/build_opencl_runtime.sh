#!/usr/bin/env bash
# Build libtvm_lowrank_opencl.so, tvm-lowrank's OpenCL runtime for the apache-tvm 0.27 wheel
# (which compiles `opencl` targets but ships no OpenCL runtime). Sources: runtime/opencl/.
#
# Usage: scripts/build_opencl_runtime.sh [--arch x86_64|aarch64] [--out DIR] [--unlinked]
#   --arch      target architecture (default: this machine's); aarch64 on an x86 host uses
#               aarch64-linux-gnu-g++ (Debian g++-aarch64-linux-gnu)
#   --out       output folder (default: .cache/opencl/<arch>, git-ignored)
#   --unlinked  do not link libtvm_runtime/libtvm_ffi: their symbols then resolve from the copies
#               that `import tvm` already loaded (always the case for a cross build unless
#               TVM_AARCH64_LIB_DIR names a folder with the aarch64 wheel's libtvm_runtime.so and
#               libtvm_ffi.so)
# Environment: PYTHON (default .venv/bin/python) locates the tvm and tvm_ffi packages whose headers
# are used; CXX overrides the compiler.
# Needs: g++ (or the cross g++) and OpenCL headers (Debian opencl-headers). libOpenCL is not
# linked: the runtime dlopens it, so an ICD loader is needed only at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

arch="$(uname -m)"
out=""
unlinked=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --unlinked) unlinked=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "build_opencl_runtime.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$arch" in
    x86_64|aarch64) ;;
    arm64) arch=aarch64 ;;
    *) echo "build_opencl_runtime.sh: unsupported --arch $arch (x86_64 or aarch64)" >&2; exit 2 ;;
esac
out="${out:-.cache/opencl/$arch}"

if [ "$arch" = "$(uname -m)" ]; then
    cxx="${CXX:-g++}"
else
    cxx="${CXX:-$arch-linux-gnu-g++}"
    if [ -z "${TVM_AARCH64_LIB_DIR:-}" ]; then unlinked=1; fi
fi
if ! command -v "$cxx" >/dev/null 2>&1; then
    echo "build_opencl_runtime.sh: compiler $cxx not found (Debian: g++, or g++-$arch-linux-gnu for a cross build)" >&2
    exit 3
fi
if ! printf '#define CL_TARGET_OPENCL_VERSION 120\n#include <CL/cl.h>\n' | "$cxx" -E -x c++ - >/dev/null 2>&1; then
    echo "build_opencl_runtime.sh: OpenCL headers (CL/cl.h) not found for $cxx (Debian: opencl-headers)" >&2
    exit 3
fi

python="${PYTHON:-.venv/bin/python}"
# The package folders, without importing tvm itself (that takes seconds).
read -r tvm_dir ffi_dir < <("$python" -c '
import importlib.util as u
print(u.find_spec("tvm").submodule_search_locations[0], u.find_spec("tvm_ffi").submodule_search_locations[0])')

link=()
if [ "$unlinked" -eq 0 ]; then
    if [ "$arch" = "$(uname -m)" ]; then
        libs=("$tvm_dir/lib" "$ffi_dir/lib")
    else
        libs=("$TVM_AARCH64_LIB_DIR")
    fi
    for dir in "${libs[@]}"; do link+=("-L$dir" "-Wl,-rpath,$dir"); done
    link+=(-ltvm_runtime -ltvm_ffi)
fi

mkdir -p "$out"
target="$out/libtvm_lowrank_opencl.so"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# One compiler per source, in parallel: the TVM FFI headers make each file take seconds.
pids=()
for src in runtime/opencl/*.cc; do
    "$cxx" -std=c++17 -O1 -fPIC -Wall -Wextra -Wno-unused-parameter \
        -I"$tvm_dir/include" -I"$ffi_dir/include" -c "$src" -o "$work/$(basename "$src" .cc).o" &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" -eq 0 ] || { echo "build_opencl_runtime.sh: compilation failed" >&2; exit 1; }
"$cxx" -shared "$work"/*.o -o "$work/lib.so" "${link[@]}" -ldl -lpthread
# Renamed into place so that a concurrent loader never sees half a file.
mv -f "$work/lib.so" "$target"
echo "$target"
