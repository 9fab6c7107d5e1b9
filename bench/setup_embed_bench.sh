#!/usr/bin/env bash
# What bench/bench_embed.sh needs besides semgate's own build: a virtualenv with the
# reference engines, and the fp32 ONNX export of the model.
#   bash bench/setup_embed_bench.sh [--venv DIR] [--onnx FILE] [--force-export]
# 1. Creates the virtualenv DIR (default bench/.venv-bench; $PYTHON, default python3, must be
#    3.10-3.12: the pins below are checked on 3.11) and pip-installs the pinned versions
#    of the engines below (PyPI only; torch's Linux wheel on PyPI is the CUDA build with its
#    nvidia-* dependencies, some GB: it runs on the CPU here, and PyPI has no CPU-only one).
# 2. Runs bench/onnx_export.py (the model directory, default models/all-minilm-l6-v2, is
#    read offline) to FILE (default bench/.onnx/all-MiniLM-L6-v2.onnx), which checks the
#    export against sentence-transformers.
# Idempotent: an existing virtualenv is reused (pip only installs what its pins lack) and an
# existing export is kept unless --force-export. Both paths are in .gitignore.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
venv=$top/bench/.venv-bench
onnx=$top/bench/.onnx/all-MiniLM-L6-v2.onnx
force=0
while [ $# -gt 0 ]; do
	case "$1" in
	--venv) venv=$2; shift 2 ;;
	--onnx) onnx=$2; shift 2 ;;
	--force-export) force=1; shift ;;
	*) echo "usage: $0 [--venv DIR] [--onnx FILE] [--force-export]" >&2; exit 2 ;;
	esac
done
MODEL=${MODEL:-$top/models/all-minilm-l6-v2}
PYTHON=${PYTHON:-python3}

# The pins (all install on CPython 3.11, manylinux x86_64).
pins=(
	torch==2.15.0
	sentence-transformers==6.2.0
	transformers==5.24.0
	tokenizers==0.23.3
	onnxruntime==1.32.0
	onnx==1.23.2
	numpy==2.4.6
)

if [ ! -x "$venv/bin/python" ]; then
	echo "== creating $venv ($("$PYTHON" --version 2>&1))"
	"$PYTHON" -m venv "$venv"
fi
py=$venv/bin/python
if "$py" - "${pins[@]}" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for p in sys.argv[1:]:
    name, want = p.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if have.split("+")[0] != want:
        sys.exit(1)
EOF
then
	echo "== $venv already has ${pins[*]}"
else
	echo "== pip install ${pins[*]} (torch's wheel and its CUDA libraries are large: minutes)"
	"$py" -m pip install --quiet --upgrade pip
	"$py" -m pip install --progress-bar off "${pins[@]}"
fi

if [ -s "$onnx" ] && [ "$force" = 0 ]; then
	echo "== $onnx exists (--force-export to make it again)"
else
	echo "== exporting $MODEL to $onnx"
	"$py" "$top/bench/onnx_export.py" --model "$MODEL" --out "$onnx"
fi
"$py" -c 'import torch, sentence_transformers as s, onnxruntime as o, tokenizers as t
print("== ready: torch %s, sentence-transformers %s, onnxruntime %s, tokenizers %s" % (
    torch.__version__, s.__version__, o.__version__, t.__version__))'
echo "== run: PY=$py ONNX=$onnx bash bench/bench_embed.sh (these two are its defaults)"
