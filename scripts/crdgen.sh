#!/usr/bin/env bash
# Regenerates manifests/crds.yaml from the api crate's types.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -p nes-api --bin crdgen > manifests/crds.yaml.tmp
mv manifests/crds.yaml.tmp manifests/crds.yaml
echo "wrote manifests/crds.yaml"
