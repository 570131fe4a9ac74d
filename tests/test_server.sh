#!/bin/sh
# Runs the `porta serve` tests (pytest, tests/server/): the official openai client, a table of
# bad requests, concurrency (continuous batching, a killed client, the queue limit), the server's
# life cycle and the chat page in headless chromium. Each test file starts its own servers on
# free loopback ports and stops them. Makes the Python venv (.venv-test) first if needed.
# Usage: tests/test_server.sh [pytest args]   env: PORTA_BIN (default ./porta), PORTA_TEST_OUT
set -eu
cd "$(dirname "$0")/.."
py=$(sh ci/test-python.sh | tail -n 1)
export PYTHONDONTWRITEBYTECODE=1
export PORTA_BIN="${PORTA_BIN:-$(pwd)/porta}"
export PORTA_TEST_OUT="${PORTA_TEST_OUT:-$(pwd)/build/test-out/server}"
[ -x "$PORTA_BIN" ] || { echo "test_server: $PORTA_BIN is not built" >&2; exit 1; }
[ -f models/smollm2-135m-instruct-q4_1.gguf ] || sh ci/get-model.sh
exec "$py" -m pytest -q -p no:cacheprovider tests/server "$@"
