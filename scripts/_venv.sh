# Shared by scripts/run and scripts/test: make .venv and install Mailstead into it.
# Usage: EXTRAS=test . scripts/_venv.sh   (EXTRAS: optional pip extras to install)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Mailstead needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || {
    echo "could not create $VENV: on Debian/Ubuntu run: apt-get install python3-venv" >&2
    exit 1
  }
fi
want="${EXTRAS:-}"
stamp="$VENV/.mailstead-installed${want:+-$want}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install -q -e "$ROOT${want:+[$want]}"
  touch "$stamp"
fi
