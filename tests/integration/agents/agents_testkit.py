"""Helpers for the agents integration tests: settings, request builders, and
unpacking the rich error status a failed call carries."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from tests.conftest import TEST_IDENTITY_SECRET
from tests.support import error_reason, violated_fields
from vocalbridge.agents.v1 import agent_pb2
from vocalbridge_agents.config import AgentsSettings
from vocalbridge_common.config import Env


def settings_for(database_url: str) -> AgentsSettings:
    """Production settings parsing, pointed at a test database and port 0."""
    return AgentsSettings.from_env(
        Env(
            {
                "VB_IDENTITY_SECRET": TEST_IDENTITY_SECRET.decode(),
                "VB_AGENTS_DATABASE_URL": database_url,
                "VB_AGENTS_HOST": "127.0.0.1",
                "VB_AGENTS_PORT": "0",
            }
        )
    )


def agent_message(**fields) -> agent_pb2.Agent:
    """A valid agent, with `fields` overriding the defaults."""
    values = {
        "display_name": "Support",
        "system_prompt": "You are a helpful support agent.",
        "primary_provider": "vendorA",
        "fallback_provider": "vendorB",
    }
    values.update(fields)
    return agent_pb2.Agent(**values)


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    reason: str
    fields: set[str]  # the fields named by BadRequest field violations


async def expect_failure(call, code: grpc.StatusCode, reason: str | None = None) -> Failure:
    """Awaits `call`, which must fail with `code` (and ErrorInfo `reason`, if given)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    failure = Failure(error.code(), error_reason(error), violated_fields(error))
    assert failure.code == code, (failure, error.details())
    if reason is not None:
        assert failure.reason == reason, failure
    return failure
