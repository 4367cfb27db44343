# Sourced by scripts/demo and scripts/test: create .venv and install Flotilla into it, and build
# the web console (master/console/dist) when it is missing or older than its sources.
# Idempotent and quick when nothing changed (pip skips what is already satisfied). Versions are
# pinned by constraints.txt (refresh it with scripts/freeze-constraints).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.flotilla-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] ||
   [ "$ROOT/constraints.txt" -nt "$stamp" ]; then
  echo "==> installing Flotilla and its dependencies into $VENV (log: $VENV/pip.log)"
  if ! { "$VENV/bin/python" -m pip install -c "$ROOT/constraints.txt" --upgrade pip &&
         "$VENV/bin/python" -m pip install -c "$ROOT/constraints.txt" -e "$ROOT[dev]"; } \
       > "$VENV/pip.log" 2>&1; then
    tail -n 30 "$VENV/pip.log"
    echo "installing Flotilla failed; the full log is $VENV/pip.log" >&2
    exit 1
  fi
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"

# The web console: `npm ci` when node_modules is missing or older than the lock file, then
# `npm run build` when dist/ is missing or older than any source. Without npm the master still
# runs; its / then says how to build the console.
CONSOLE="$ROOT/master/console"
console_stale() {
  [ -f "$CONSOLE/dist/index.html" ] || return 0
  [ -n "$(find "$CONSOLE" -maxdepth 1 -type f \( -name 'package*.json' -o -name index.html \
    -o -name 'vite.config.*' -o -name 'tsconfig*.json' \) -newer "$CONSOLE/dist/index.html" \
    -print -quit)" ] && return 0
  for dir in src public; do
    [ -d "$CONSOLE/$dir" ] || continue
    [ -n "$(find "$CONSOLE/$dir" -newer "$CONSOLE/dist/index.html" -print -quit)" ] && return 0
  done
  return 1
}
if [ -f "$CONSOLE/package.json" ] && console_stale; then
  if ! command -v npm >/dev/null; then
    echo "==> npm not found: the web console is not built (install Node.js 20, then rerun)" >&2
  else
    echo "==> building the web console in $CONSOLE (log: $VENV/console-build.log)"
    if ! (
      cd "$CONSOLE"
      if [ ! -f node_modules/.package-lock.json ] ||
         [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund
      fi
      npm run build
    ) > "$VENV/console-build.log" 2>&1; then
      tail -n 30 "$VENV/console-build.log"
      echo "building the web console failed; the full log is $VENV/console-build.log" >&2
      exit 1
    fi
  fi
fi
