"""Fixtures of the turn use-case tests: the in-memory turn store and a session in it."""

from __future__ import annotations

import pytest

from tests.unit.conversation.fakes import AGENT, FakeTurnStore
from vocalbridge_common.ids import new_id


@pytest.fixture
def store() -> FakeTurnStore:
    return FakeTurnStore()


@pytest.fixture
def session_name(store) -> str:
    """A session of AGENT in the store."""
    session_id = new_id("ses")
    store.turns.add_session(session_id, AGENT.agent_id)
    return f"sessions/{session_id}"
