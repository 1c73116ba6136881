#!/usr/bin/env bash
# Pins the base images of every Dockerfile to the current digest of their tag: each
# `ARG ..._IMAGE=<tag>@sha256:<digest>` default is rewritten with the digest the registry serves
# for <tag> now (the multi-platform index, so one digest fits every platform). Needs Docker with
# buildx and access to the registry. Review the diff, build, test, commit.
#
#     tools/k8s/pin-base-images.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

dockerfiles=(services/base.Dockerfile services/*/Dockerfile gateway-envoy/Dockerfile web/Dockerfile)
tags=$(grep -hoE '^ARG [A-Z_]+_IMAGE=[^@[:space:]]+@sha256:[0-9a-f]{64}' "${dockerfiles[@]}" \
  | sed -E 's/^ARG [A-Z_]+_IMAGE=([^@]+)@.*/\1/' | sort -u)
for tag in $tags; do
  digest=$(docker buildx imagetools inspect "$tag" --format '{{json .Manifest.Digest}}' | tr -d '"')
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "no digest for $tag: $digest" >&2; exit 1; }
  escaped=$(printf '%s' "$tag" | sed 's/[.]/\\./g')
  sed -i -E "s#(=${escaped})@sha256:[0-9a-f]{64}#\1@${digest}#" "${dockerfiles[@]}"
  echo "$tag@$digest"
done
