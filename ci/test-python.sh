#!/bin/sh
# Makes (idempotently) the Python virtual environment the server tests and the serve benchmark
# use: .venv-test/ in the repository root (git-ignored) with pinned PyPI packages.
# Usage: ci/test-python.sh   -> prints the venv's python path on its last line
set -eu
cd "$(dirname "$0")/.."
venv=.venv-test
reqs="openai==3.57.0 pytest==9.2.0 selenium==4.51.0 requests==2.32.3"
stamp="$venv/.porta-reqs"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$reqs" ]; then
  echo "test-python: $venv ready" >&2
else
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $reqs
  echo "$reqs" > "$stamp"
  echo "test-python: $venv made with $reqs" >&2
fi
echo "$(pwd)/$venv/bin/python"
