#!/usr/bin/env bash
# The GPU check (issue 24): one command, < 8 minutes on one H100, no downloads.
#   bash benchmarks/gpu_check.sh OUTDIR              # needs a CUDA build of torch in the environment
#   bash benchmarks/gpu_check.sh --dry-run OUTDIR    # CPU, tiny sizes (what CI runs)
# Writes OUTDIR/gpu_check.json and OUTDIR/gpu_check.md; see benchmarks/README.md.
# Python: $PYTHON if set, else the repository's .venv/bin/python, else python3.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then
  py="$repo/.venv/bin/python"
elif command -v python3 >/dev/null; then
  py="$(command -v python3)"
else
  echo "gpu_check: no Python: build $repo/.venv (make env) or set PYTHON" >&2
  exit 3
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$repo/benchmarks/gpu_check.py" "$@"
