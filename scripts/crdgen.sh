#!/usr/bin/env bash
# Regenerates the checked-in artefacts derived from the api crate's types:
# manifests/crds.yaml and api/openapi.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet -p nes-api --bin crdgen > manifests/crds.yaml.tmp
mv manifests/crds.yaml.tmp manifests/crds.yaml
cargo run --quiet -p nes-api --bin crdgen -- --openapi > api/openapi.json.tmp
mv api/openapi.json.tmp api/openapi.json
echo "wrote manifests/crds.yaml and api/openapi.json"
