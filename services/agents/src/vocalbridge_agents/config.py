"""Agents service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from vocalbridge_common.config import CommonSettings, ConfigError, Env
from vocalbridge_common.topology import default_port

# The documented limit of Agent.system_prompt (agent.proto).
DEFAULT_MAX_SYSTEM_PROMPT_CHARS = 16_000


@dataclass(frozen=True)
class AgentsSettings:
    common: CommonSettings
    # Longest system prompt accepted; lowering it never invalidates stored versions,
    # it only refuses new configurations that exceed it.
    max_system_prompt_chars: int
    # The voice service, whose installed voices an agent's voice is checked against when saved
    # (VB_VOICE_ADDRESS). Unset: only the voice name's form is checked; a spoken turn still
    # refuses a voice that is not installed.
    voice_address: str | None = None

    @classmethod
    def from_env(cls, env: Env | None = None) -> AgentsSettings:
        env = env or Env()
        max_prompt = env.int("VB_AGENTS_MAX_SYSTEM_PROMPT_CHARS", DEFAULT_MAX_SYSTEM_PROMPT_CHARS)
        if max_prompt < 1:
            raise ConfigError("VB_AGENTS_MAX_SYSTEM_PROMPT_CHARS must be at least 1")
        return cls(
            common=CommonSettings.from_env("agents", default_port("agents"), env),
            max_system_prompt_chars=max_prompt,
            voice_address=env.optional("VB_VOICE_ADDRESS"),
        )
