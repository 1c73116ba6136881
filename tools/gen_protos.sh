#!/usr/bin/env bash
# The one code-generation step: Python messages, type stubs and gRPC stubs under
# gen/python, and the descriptor set Envoy's JSON transcoder reads.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=gen/python
rm -rf gen && mkdir -p "$out"
wkt=$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
mapfile -t files < <(find protos/vocalbridge -name '*.proto' | sort)
protoc=("$PY" -m grpc_tools.protoc -I protos -I protos/third_party -I "$wkt")
# Python code for our protos only: google/api and google/rpc come from googleapis-common-protos.
# Typed stubs for the gRPC modules come from mypy-protobuf's plugin (grpcio-tools writes none),
# installed beside the interpreter. The virtual environment always has it (requirements.lock);
# the image builds install only the code generator (PYTHON=python), and need no stubs.
plugin=$("$PY" -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "protoc-gen-mypy_grpc"))')
stubs=()
if [[ -x "$plugin" ]]; then
  stubs=(--plugin=protoc-gen-mypy_grpc="$plugin" --mypy_grpc_out="$out")
else
  echo "note: $plugin missing; no typed stubs for the gRPC modules" >&2
fi
"${protoc[@]}" --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${stubs[@]}" "${files[@]}" \
  2> >(grep -v '^Writing mypy to' >&2)
# The descriptor set carries every import, plus google/rpc's status and error details,
# which no contract imports but convert_grpc_status needs to print an error body.
"${protoc[@]}" --include_imports --include_source_info --descriptor_set_out=gen/vocalbridge.pb \
  "${files[@]}" google/rpc/status.proto google/rpc/error_details.proto
echo "generated ${#files[@]} proto files into $out and gen/vocalbridge.pb"
