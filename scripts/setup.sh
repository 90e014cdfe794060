#!/usr/bin/env bash
# Set up a fresh machine: Debian packages (real data), a Python 3.11 venv in .venv, the package.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# dataset-fashion-mnist: real test data; PoCL + ICD loader + headers: our OpenCL runtime (Mali path).
apt_packages=(dataset-fashion-mnist ocl-icd-libopencl1 pocl-opencl-icd opencl-headers g++)
need_apt=()
for package in "${apt_packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || need_apt+=("$package")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}"
fi

python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$python_bin" -c 'import sys; assert sys.version_info[:2] == (3, 11), "tvm-lowrank needs Python 3.11, found " + sys.version' 
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
bash scripts/build_opencl_runtime.sh >/dev/null  # seconds; loaded by tvm_lowrank.opencl
echo "tvm-lowrank set up in $(pwd)/.venv"
