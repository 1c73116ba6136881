"""Sessions and their history: create, get, list, and list a session's messages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import SessionNotFound
from vocalbridge_common.ids import new_id
from vocalbridge_common.pagination import Page, PageKey, Paginator
from vocalbridge_conversation.agents_client import AgentDirectory
from vocalbridge_conversation.domain.sessions import (
    SESSION_ID_PREFIX,
    Message,
    NewSession,
    Session,
    parse_agent_filter,
    parse_session_name,
    session_id_of,
    validate_new_session,
)
from vocalbridge_conversation.repository import MessageRepository, SessionRepository


def _message_position(after: PageKey | None) -> tuple[datetime, str] | None:
    """A messages page token's key, (create_time, id) of the last message sent."""
    if isinstance(after, list) and len(after) == 2:
        return datetime.fromisoformat(str(after[0])), str(after[1])
    return None


class SessionService:
    def __init__(
        self,
        db: Database,
        agents: AgentDirectory,
        paginator: Paginator,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._agents = agents
        self._paginator = paginator
        self._clock = clock

    async def create_session(self, tenant_id: str, new: NewSession, timeout: float) -> Session:
        """A session pinned to the agent's current version; `timeout` bounds the agents call."""
        agent_id, channel = validate_new_session(new)
        agent = await self._agents.current(agent_id, timeout)
        now = self._clock()
        session = Session(
            id=new_id(SESSION_ID_PREFIX),
            agent_id=agent_id,
            agent_version=agent.version,
            channel=channel,
            external_user_id=new.external_user_id,
            metadata=dict(new.metadata),
            create_time=now,
            update_time=now,
        )
        async with self._db.tenant_transaction(tenant_id) as tx:
            await SessionRepository(tx, tenant_id).add(session)
        return session

    async def get_session(self, tenant_id: str, name: str) -> Session:
        session_id = parse_session_name(name)
        async with self._db.tenant_transaction(tenant_id) as tx:
            session = await SessionRepository(tx, tenant_id).get(session_id)
        if session is None:
            raise SessionNotFound(name)
        return session

    async def list_sessions(self, tenant_id: str, agent: str, page_size: int, page_token: str) -> Page[Session]:
        """Newest first, optionally of one agent only."""
        agent_id = parse_agent_filter(agent)
        # The tenant and the filter are part of the query: a token fits no other list.
        request = self._paginator.request(f"sessions:{tenant_id}:{agent_id or ''}", page_size, page_token)
        before_id = str(request.after) if request.after is not None else None
        async with self._db.tenant_transaction(tenant_id) as tx:
            sessions = await SessionRepository(tx, tenant_id).page(agent_id, before_id, request.fetch)
        return self._paginator.page(request, sessions, key=lambda session: session.id)

    async def list_messages(self, tenant_id: str, parent: str, page_size: int, page_token: str) -> Page[Message]:
        """Oldest first: the conversation in order."""
        # The request is checked before the session is looked up; a token fits one session only.
        session_id = session_id_of(parent)
        request = self._paginator.request(f"messages:{tenant_id}:{session_id or ''}", page_size, page_token)
        if session_id is None:
            raise SessionNotFound(parent)
        async with self._db.tenant_transaction(tenant_id) as tx:
            if await SessionRepository(tx, tenant_id).get(session_id) is None:
                raise SessionNotFound(parent)
            messages = await MessageRepository(tx, tenant_id).page(
                session_id, _message_position(request.after), request.fetch
            )
        return self._paginator.page(
            request, messages, key=lambda message: [message.create_time.isoformat(), message.id]
        )
