#!/usr/bin/env bash
# The Python the virtual environments are made with (`scripts/setup_python.sh python3.11`). Debian
# ships `venv`'s pip bootstrap (ensurepip) apart, in python3.X-venv: without it `python3.11 -m venv`
# fails half-way, so it is installed here when missing, as root or through `sudo -n`.
set -euo pipefail
PY="${1:-python3.11}"
if command -v "$PY" >/dev/null 2>&1 && "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  exit 0
fi
name="$(basename "$PY")"
if [[ ! "$name" =~ ^python3\.[0-9]+$ ]]; then
  echo "$PY cannot make virtual environments (no ensurepip): install its venv support, or set PY=python3.11" >&2
  exit 1
fi
exec "$(dirname "$0")/apt_install.sh" "to make the project's virtual environments" "$name" "$name-venv"
