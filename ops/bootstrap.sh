#!/usr/bin/env bash
# Make .venv from the lock. Re-runs only when pyproject.toml or the lock changed
# (the stamp file records it). On Debian as root, installs python3-venv if missing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
python=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
[[ -n "$python" ]] || { echo "bootstrap: Python 3.11 is required (Debian: apt-get install python3 python3-venv)" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "bootstrap: $python is not Python 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }
stamp=.venv/.installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then exit 0; fi
if [[ ! -x .venv/bin/python ]]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf .venv && "$python" -m venv .venv
    else
      echo "bootstrap: '$python -m venv' failed: install python3-venv" >&2; exit 1
    fi
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip setuptools wheel
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
echo "$want" > "$stamp"
