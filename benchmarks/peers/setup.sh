#!/usr/bin/env bash
# Build the virtualenvs of the peers that benchmarks/orchestration.py compares distillery with:
#   .bench-peers/curator     bespokelabs-curator==0.1.31
#   .bench-peers/distilabel  distilabel[openai]==1.5.3
# Each is a plain `python3.11 -m venv` with packages from PyPI. Neither peer needs torch for its
# OpenAI-compatible path; if a peer's dependencies would pull torch anyway, the CPU build
# (torch==2.13.0, which pip finds locally) is installed first so that no CUDA build comes in.
# Re-running is cheap: a venv whose stamp file exists is left as it is (delete the folder to rebuild).
#
#   bash benchmarks/peers/setup.sh            # both
#   bash benchmarks/peers/setup.sh curator    # one
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROOT="${BENCH_PEERS_DIR:-$REPO/.bench-peers}"
PYTHON="${PYTHON:-python3.11}"

declare -A SPEC=(
  [curator]="bespokelabs-curator==0.1.31"
  [distilabel]="distilabel[openai]==1.5.3 requests"  # 1.5.3 imports requests without declaring it
)

# pip, less the warnings about index locations of this machine's pip configuration that do not exist.
pip_q() {
  local py="$1"; shift
  "$py" -m pip "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2)
}

build() {
  local name="$1" spec="${SPEC[$1]}" venv="$ROOT/$1"
  local stamp="$venv/.installed-stamp" pkgs
  read -ra pkgs <<< "$spec"
  if [[ -f "$stamp" ]] && grep -qxF "$spec" "$stamp"; then
    echo "$name: already built ($venv)"
    return
  fi
  echo "$name: building $venv with $spec"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  pip_q "$venv/bin/python" install -q --upgrade pip
  # Would the peer pull torch? Resolve without installing and look.
  local report
  report="$(mktemp)"
  pip_q "$venv/bin/python" install -q --dry-run --ignore-installed --report "$report" "${pkgs[@]}"
  if "$venv/bin/python" - "$report" <<'PY'
import json, sys
names = {i["metadata"]["name"].lower() for i in json.load(open(sys.argv[1]))["install"]}
sys.exit(0 if "torch" in names else 1)
PY
  then
    echo "$name: its dependencies pull torch; installing the CPU build torch==2.13.0 first"
    pip_q "$venv/bin/python" install -q torch==2.13.0
    pip_q "$venv/bin/python" install -q "${pkgs[@]}" torch==2.13.0
  else
    pip_q "$venv/bin/python" install -q "${pkgs[@]}"
  fi
  rm -f "$report"
  "$venv/bin/python" -m pip freeze > "$venv/freeze.txt"
  echo "$spec" > "$stamp"
  echo "$name: done ($(wc -l < "$venv/freeze.txt") packages, see $venv/freeze.txt)"
}

mkdir -p "$ROOT"
if [[ $# -eq 0 ]]; then set -- curator distilabel; fi
for name in "$@"; do
  if [[ -z "${SPEC[$name]:-}" ]]; then
    echo "unknown peer: $name (known: ${!SPEC[*]})" >&2
    exit 2
  fi
  build "$name"
done
