#!/usr/bin/env bash
# Every GPU path of namexp in one command (benchmarks/gpu_check.py): benchmarks/gpu_check.sh [--dry-run] [--data DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$python" ] || python=python3
exec "$python" "$here/gpu_check.py" "$@"
