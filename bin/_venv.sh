# Sourced by bin/start and bin/test: make sure .venv holds the project and its pinned dependencies,
# and the test harness (harness/: soak, bench; a distribution of its own, not in the product's wheel).
# A fresh machine needs only Python >= 3.11 (PYTHON=... to choose one); everything else is pip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.installed"
if [ ! -x "$VENV/bin/python" ] || [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] \
    || [ "$ROOT/harness/pyproject.toml" -nt "$stamp" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "competition-pipeline needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
    echo "[setup] installing into $VENV" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev]" -e "$ROOT/harness"
    "$VENV/bin/python" -m pip check
    touch "$stamp"
fi
