"""auth.Check as Envoy calls it: with the edge secret in the call's metadata."""

from __future__ import annotations

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from vocalbridge_common.headers import EDGE_SECRET_HEADER

TEST_EDGE_SECRET = b"test-edge-secret-0123456789abcdef0123"


class EdgeCheck:
    """The Authorization stub, sending the edge secret (or `secret`) on every Check."""

    def __init__(self, channel: grpc.aio.Channel, secret: bytes | None = TEST_EDGE_SECRET) -> None:
        self._stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        self._metadata = ((EDGE_SECRET_HEADER, secret.decode()),) if secret is not None else ()

    async def Check(self, request: external_auth_pb2.CheckRequest) -> external_auth_pb2.CheckResponse:
        return await self._stub.Check(request, metadata=self._metadata)
