#!/usr/bin/env bash
# Regenerates deploy/k8s/base/envoy/envoy.json, the Envoy configuration that the base ships as a
# ConfigMap, from the one template (`python -m vocalbridge_edge`, gateway-envoy/src, profile k8s).
# Run it after changing the template, the topology (libs/common) or the namespace, and commit the
# result.
#
#     deploy/k8s/render-envoy.sh           rewrite the file
#     deploy/k8s/render-envoy.sh --check   exit 1 if the committed file is not what the template makes
#
# The renderer runs in the virtual environment (`make venv`), where it imports the common library.
# Both modes also let Envoy itself validate the configuration (`envoy --mode validate`) against the
# repository's descriptor set, when the virtual environment's envoy and gen/vocalbridge.pb exist
# (`make gen`). The committed file points at /etc/vocalbridge/vocalbridge.pb, where the edge image
# (gateway-envoy/Dockerfile) puts the descriptor set; validation uses a copy rendered with the
# local path instead.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
ENVOY=${ENVOY:-.venv/bin/envoy}
NAMESPACE=vocalbridge            # must match `namespace:` in deploy/k8s/base/kustomization.yaml
OUT=deploy/k8s/base/envoy/envoy.json

mode=write
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if ! "$PYTHON" -c 'import vocalbridge_edge' 2>/dev/null; then
  echo "$0: $PYTHON cannot import vocalbridge_edge: run \`make venv\` (or set PYTHON)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

render() {
  "$PYTHON" -m vocalbridge_edge --profile k8s --namespace "$NAMESPACE" "$@"
}

render --no-check --out "$tmp/envoy.json"

if [[ -x "$ENVOY" && -f gen/vocalbridge.pb ]]; then
  render --descriptor-set gen/vocalbridge.pb --out "$tmp/validate.json"
  if ! "$ENVOY" --mode validate -c "$tmp/validate.json" --log-level error >"$tmp/validate.log" 2>&1; then
    cat "$tmp/validate.log" >&2
    echo "$0: envoy rejects the k8s configuration" >&2
    exit 1
  fi
else
  echo "$0: note: $ENVOY or gen/vocalbridge.pb missing (run \`make gen\`); not validated by Envoy" >&2
fi

if [[ $mode == check ]]; then
  if ! diff -u "$OUT" "$tmp/envoy.json"; then
    echo "$0: $OUT is stale; run deploy/k8s/render-envoy.sh and commit the result" >&2
    exit 1
  fi
  echo "$OUT is up to date"
else
  cp "$tmp/envoy.json" "$OUT"
  echo "wrote $OUT"
fi
