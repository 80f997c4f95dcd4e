#!/usr/bin/env bash
# What `make bench` needs besides the project's own venv, installed only when missing:
#   - Debian packages wrk and nginx-light (install scripts kept from starting any service, as
#     .ci/debian-packages does);
#   - LiteLLM's proxy, pinned, in its own venv bench/.litellm-venv (its dependency tree must
#     not touch the project's); a failed install is reported, and the benchmark then says
#     "n/a" for LiteLLM instead of failing;
#   - matplotlib in the project venv, for the chart.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# Newer LiteLLM releases need a certifi newer than the package index here serves; this is the
# newest that installs, and it has every videos route (create, retrieve, content, edits, ...).
LITELLM_VERSION="${LITELLM_VERSION:-1.106.2}"
VENV=bench/.litellm-venv

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bench: installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" </dev/null
fi

installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' \
  2>/dev/null || true)"
if [ "$installed" != "$LITELLM_VERSION" ]; then
  echo "bench: installing litellm[proxy]==$LITELLM_VERSION into $VENV (about a minute)"
  log=bench/.litellm-install.log
  if { [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"; } \
      && "$VENV/bin/python" -m pip install -q --upgrade pip >"$log" 2>&1 \
      && "$VENV/bin/python" -m pip install -q "litellm[proxy]==$LITELLM_VERSION" >>"$log" 2>&1; then
    echo "bench: LiteLLM $LITELLM_VERSION installed"
  else
    echo "bench: LiteLLM install FAILED; it will be reported as n/a. Last lines of $log:"
    grep -v 'is ignored: it is neither' "$log" | tail -5 || true
  fi
fi

.venv/bin/python -c 'import matplotlib' 2>/dev/null || {
  echo "bench: installing matplotlib into .venv"
  .venv/bin/python -m pip install -q matplotlib >bench/.matplotlib-install.log 2>&1 || {
    grep -v 'is ignored: it is neither' bench/.matplotlib-install.log | tail -5; exit 1; }
}
