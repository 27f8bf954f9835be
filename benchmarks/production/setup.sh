#!/usr/bin/env bash
# Make the peers' own environments: one for arq, one for Celery (plus matplotlib for the plots).
#
#   bash benchmarks/production/setup.sh     # -> ~/.cache/nervenet-bench/{arq,celery} ($NERVENET_PEERS_DIR)
#                                           #    + uvloop, py-spy in NERVENET_PYTHON's environment
#
# arq caps redis-py below 6 while Celery's Redis transport takes the newest, and nervenet uses its
# own: so each peer gets a venv of its own and none of them enters nervenet's dependencies.
# LangGraph and langchain-core are pinned to the versions of the interpreter that runs nervenet
# (NERVENET_PYTHON, default: `python` on PATH), so every system runs the same graph code.
# Idempotent: a second run only checks.
set -euo pipefail

NERVENET_PYTHON="${NERVENET_PYTHON:-$(command -v python)}"
BASE="${NERVENET_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nervenet-bench}"

version_of() {
    "$NERVENET_PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"
}
LANGGRAPH="$(version_of langgraph)"
LANGCHAIN_CORE="$(version_of langchain-core)"
COMMON=("langgraph==$LANGGRAPH" "langchain-core==$LANGCHAIN_CORE" "psutil")

make_venv() {  # make_venv NAME PACKAGE...
    local venv="$BASE/$1"
    shift
    if [ ! -x "$venv/bin/python" ]; then
        mkdir -p "$BASE"
        "$NERVENET_PYTHON" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" "${COMMON[@]}" \
        2> >(grep -v "is ignored: it is neither" >&2)
    echo "$venv: $("$venv/bin/python" -c 'import sys, langgraph, redis; print("python", sys.version.split()[0], "| redis-py", redis.__version__)')"
}

# nervenet's own side of the benchmark runs in NERVENET_PYTHON's environment: uvloop for its
# processes (run.py --uvloop, the default) and py-spy for the profiles. Benchmark tools only;
# nervenet itself depends on neither.
"$NERVENET_PYTHON" -m pip install --quiet --disable-pip-version-check uvloop py-spy \
    2> >(grep -v "is ignored: it is neither" >&2)

make_venv arq "arq==0.28.0"
make_venv celery "celery[redis]==5.7.0" "matplotlib"
echo "peers' environments ready under $BASE (langgraph $LANGGRAPH)"
