#!/usr/bin/env bash
# Install everything hwnas-deploy needs on Debian 12 / Python 3.11, idempotently:
#   apt: adb (the Android twin's client), iproute2 (ss: the lab tests' loopback check),
#        the aarch64 cross compiler (TVM cross builds), the Arm embedded toolchain and QEMU
#        (the Cortex-M7 firmware and its simulated board), PostgreSQL (a lab's shared store; the
#        tests start a throw-away server of their own)
#   .venv        : the package with its runtimes (torch, onnxruntime, LiteRT, TVM, ...)
#   .venv-litert : the LiteRT converter (litert-torch), see tools/litert-converter-requirements.txt
# A second run only re-installs what changed (stamps hash the requirement files).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "setup: Python 3.11 is required, $PY is $("$PY" --version)" >&2; exit 1; }

APT_PACKAGES=(adb iproute2 gcc-aarch64-linux-gnu gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm make postgresql)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# make_env DIR STAMP_SOURCE PIP_ARGS...
make_env() {
  local dir=$1 stamp_src=$2; shift 2
  local stamp; stamp=$(cat "$stamp_src" | sha256sum | cut -c1-16)
  if [ -f "$dir/.hwnas-stamp" ] && [ "$(cat "$dir/.hwnas-stamp")" = "$stamp" ]; then
    return
  fi
  echo "setup: installing $dir (a few minutes the first time)"
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  "$dir/bin/python" -m pip install -q "$@"
  "$dir/bin/python" -m pip check >/dev/null || { "$dir/bin/python" -m pip check; exit 1; }
  echo "$stamp" > "$dir/.hwnas-stamp"
}
# the two environments install side by side (downloads and unpacking overlap); the converter's
# output is shown once it is done
litert_log=$(mktemp)
trap 'rm -f "$litert_log"' EXIT
make_env .venv-litert tools/litert-converter-requirements.txt -r tools/litert-converter-requirements.txt \
  >"$litert_log" 2>&1 &
litert_pid=$!
make_env .venv pyproject.toml -e '.[all]' || { kill "$litert_pid" 2>/dev/null; wait "$litert_pid"; exit 1; }
litert_status=0
wait "$litert_pid" || litert_status=$?
cat "$litert_log"
[ "$litert_status" -eq 0 ] || { echo "setup: installing .venv-litert failed (exit $litert_status)" >&2; exit 1; }
.venv/bin/hwnas --version
.venv/bin/hwnas doctor   # every piece outside pip's reach, and what is missing
