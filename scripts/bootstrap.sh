# Sourced by scripts/demo and scripts/test: create .venv and install Flotilla into it.
# Idempotent and quick when nothing changed (pip skips what is already satisfied).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.flotilla-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "==> installing Flotilla and its dependencies into $VENV (log: $VENV/pip.log)"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
         "$VENV/bin/python" -m pip install -e "$ROOT[dev]"; } > "$VENV/pip.log" 2>&1; then
    tail -n 30 "$VENV/pip.log"
    echo "installing Flotilla failed; the full log is $VENV/pip.log" >&2
    exit 1
  fi
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
