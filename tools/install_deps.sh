#!/usr/bin/env bash
# Installs what building qkv2ctx needs and the machine lacks: cmake, g++, GoogleTest, CLI11 and fmt
# from Debian's packages (with sudo when not root), numpy from PyPI (for the CLI's recheck tests).
# The CUDA toolkit is optional and not installed here: with nvcc on the PATH (or in
# /usr/local/cuda/bin) the CUDA backends are built too.
set -euo pipefail
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
for pkg in libgtest-dev libcli11-dev libfmt-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: installing ${missing[*]}"
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -c "import numpy" 2>/dev/null || python3 -m pip install -q numpy
