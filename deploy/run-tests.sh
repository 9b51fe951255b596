#!/usr/bin/env bash
# The README's test command (called by `make test` and .ci/run).
set -euo pipefail
exec pytest -q "$@"
