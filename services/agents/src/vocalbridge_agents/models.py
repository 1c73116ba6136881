"""Agents tables: the current configuration of each agent and its immutable version history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Double, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vocalbridge_common.db import NAMING_CONVENTION, UtcDateTime


class AgentsBase(DeclarativeBase):
    """The agents tables' own MetaData: one service, one schema, one migration history.
    Declared as a class (not built by a factory) so type checkers accept it as a base."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AgentConfigColumns:
    """The configuration columns, declared once for the agent and for each version snapshot."""

    display_name: Mapped[str] = mapped_column(String(100))
    system_prompt: Mapped[str] = mapped_column(Text)
    primary_provider: Mapped[str] = mapped_column(String(64))
    fallback_provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(100))
    # NULL: the provider's default.
    temperature: Mapped[float | None] = mapped_column(Double, nullable=True)
    top_p: Mapped[float | None] = mapped_column(Double, nullable=True)
    max_output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    voice_name: Mapped[str] = mapped_column(String(50))
    voice_words_per_minute: Mapped[int] = mapped_column(Integer)


class AgentRow(AgentConfigColumns, AgentsBase):
    """An agent at its current version. Deleting sets delete_time; the row and its
    versions stay, because sessions pin versions."""

    __tablename__ = "agents"
    __table_args__ = (Index("ix_agents_tenant_id_id", "tenant_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)
    delete_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class AgentVersionRow(AgentConfigColumns, AgentsBase):
    """One immutable snapshot. The primary key (agent_id, version) is what makes two
    concurrent updates unable to both create the same version."""

    __tablename__ = "agent_versions"

    agent_id: Mapped[str] = mapped_column(String(40), ForeignKey("agents.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
