"""Assertion helpers: unpack the rich error details a service sends."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def _details(error: grpc.aio.AioRpcError):
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    return status.details


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call."""
    for detail in _details(error):
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    raise AssertionError("no ErrorInfo in the status details")


def violated_fields(error: grpc.aio.AioRpcError) -> set[str]:
    """The fields named by the BadRequest detail of a failed call."""
    for detail in _details(error):
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            return {violation.field for violation in bad_request.field_violations}
    return set()
