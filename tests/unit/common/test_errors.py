import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from vocalbridge_common.errors import FieldViolation, NotFound, invalid_fields, status_for, to_rpc_status


def _unpack(status, message_type):
    for detail in status.details:
        message = message_type()
        if detail.Unpack(message):
            return message
    return None


def test_domain_error_maps_to_rich_status():
    error = NotFound("agent 'agt_x' not found", reason="AGENT_NOT_FOUND", metadata={"agent": "agents/agt_x"})
    status = to_rpc_status(error, "req-1")
    assert status.code == code_pb2.NOT_FOUND == grpc.StatusCode.NOT_FOUND.value[0]
    info = _unpack(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "AGENT_NOT_FOUND",
        "vocalbridge.dev",
        {"agent": "agents/agt_x"},
    )
    assert _unpack(status, error_details_pb2.RequestInfo).request_id == "req-1"
    assert _unpack(status, error_details_pb2.BadRequest) is None


def test_invalid_fields_carries_every_violation():
    error = invalid_fields(
        [FieldViolation("agent.display_name", "is required"), FieldViolation("agent.model", "too long")]
    )
    status = to_rpc_status(error, None)
    assert status.code == code_pb2.INVALID_ARGUMENT
    bad_request = _unpack(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["agent.display_name", "agent.model"]
    assert _unpack(status, error_details_pb2.RequestInfo) is None


def test_unexpected_exception_reveals_nothing_of_its_cause():
    try:
        raise RuntimeError("connection to postgresql://app:hunter2@db failed")
    except RuntimeError as error:
        status = status_for(error, "req-2")
    assert status.code == code_pb2.INTERNAL
    wire = status.SerializeToString()
    for leak in (b"hunter2", b"postgresql", b"RuntimeError", b"Traceback"):
        assert leak not in wire, leak
    assert _unpack(status, error_details_pb2.ErrorInfo).reason == "INTERNAL"
    assert _unpack(status, error_details_pb2.RequestInfo).request_id == "req-2"


class _DriverError(Exception):
    """Stands for a driver's exception: asyncpg's and psycopg's carry the server's SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"server said {sqlstate}")
        self.sqlstate = sqlstate


class _WrappedError(Exception):
    """Stands for SQLAlchemy's DBAPIError: the driver's exception in `orig`."""

    def __init__(self, orig: Exception, *, connection_invalidated: bool = False) -> None:
        super().__init__("wrapped")
        self.orig = orig
        self.connection_invalidated = connection_invalidated


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        _DriverError("57P01"),  # admin shutdown: the server is restarting
        _DriverError("08006"),  # connection failure
        _WrappedError(_DriverError("57P03")),  # cannot connect now: the server is starting
        _WrappedError(ValueError("closed"), connection_invalidated=True),
    ],
)
def test_an_unreachable_database_is_unavailable_not_internal(error):
    try:
        try:
            raise error
        except Exception as cause:
            raise RuntimeError("the repository failed") from cause
    except RuntimeError as raised:
        status = status_for(raised, "req-3")
    assert status.code == code_pb2.UNAVAILABLE
    assert _unpack(status, error_details_pb2.ErrorInfo).reason == "DATABASE_UNAVAILABLE"
    assert b"5432" not in status.SerializeToString() and b"server said" not in status.SerializeToString()


@pytest.mark.parametrize("error", [_DriverError("23505"), _DriverError("22P02"), _WrappedError(_DriverError("42P01"))])
def test_other_database_errors_stay_internal(error):
    """A constraint, a bad value or a missing table is no outage: a retry would fail the same way."""
    assert status_for(error, None).code == code_pb2.INTERNAL


def test_domain_error_keeps_its_own_status():
    status = status_for(NotFound("no such agent", reason="AGENT_NOT_FOUND"), None)
    assert status.code == code_pb2.NOT_FOUND and status.message == "no such agent"


def test_whatever_an_error_echoes_the_status_stays_small():
    huge = "x" * 200_000
    error = invalid_fields([FieldViolation(f"events[{i}].{huge}", f"bad {huge}") for i in range(500)])
    error.metadata["echo"] = huge
    status = to_rpc_status(error, "req-1")
    # Small enough for a gRPC trailer (Envoy's header limit is 60 KiB, base64 adds a third).
    assert len(status.SerializeToString()) < 16_000
    assert len(status.message) <= 1000 and status.message.endswith("…")
    info = _unpack(status, error_details_pb2.ErrorInfo)
    assert len(info.metadata["echo"]) <= 500
    bad_request = _unpack(status, error_details_pb2.BadRequest)
    assert 0 < len(bad_request.field_violations) <= 20
    assert bad_request.field_violations[0].field.startswith("events[0].x")


def test_a_short_error_is_left_as_it_is():
    error = NotFound("agent 'agt_x' not found", reason="AGENT_NOT_FOUND", metadata={"agent": "agents/agt_x"})
    assert to_rpc_status(error, None).message == "agent 'agt_x' not found"
