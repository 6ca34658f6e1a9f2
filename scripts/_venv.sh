# Shared by scripts/run, scripts/test and scripts/bench: make .venv and install Mailstead
# into it, with the versions pinned in constraints.txt (scripts/refresh-constraints
# renews them), so every install and image build gets the same libraries.
# Usage: EXTRAS=test . scripts/_venv.sh   (EXTRAS: optional pip extras to install)
# MAILSTEAD_VENV names another venv to use (and fill on first use) instead of .venv.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MAILSTEAD_VENV:-$ROOT/.venv}
CONSTRAINTS="$ROOT/constraints.txt"
PY=${PYTHON:-python3}
say() { echo "mailstead: $*" >&2; }
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Mailstead needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV" || {
    echo "could not create $VENV: on Debian/Ubuntu run: apt-get install python3-venv" >&2
    exit 1
  }
fi
want="${EXTRAS:-}"
stamp="$VENV/.mailstead-installed${want:+-$want}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$CONSTRAINTS" -nt "$stamp" ]; then
  started=$(date +%s)
  say "installing Mailstead${want:+ with the $want extras} and its dependencies into $VENV"
  say "(the first time this downloads about 30 packages and takes a minute or so)"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # One line per package as pip fetches it (its download bars and "Requirement already
  # satisfied" chatter left out); errors go to stderr untouched, and pipefail keeps
  # pip's exit status.
  "$VENV/bin/python" -m pip install --progress-bar off -c "$CONSTRAINTS" \
      -e "$ROOT${want:+[$want]}" \
    | awk '/^(Collecting|Successfully installed)/ { print "  " $0; fflush() }' >&2
  touch "$stamp"
  say "installed in $(($(date +%s) - started)) s"
fi
