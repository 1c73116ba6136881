"""Converse: one spoken turn, whole. Speech-to-text, the transcript as a turn of the session
through the conversation service (for the caller's tenant: the same delivery, history,
idempotency and billing as a text turn), then the reply spoken with the agent's voice.

Everything that can be refused is refused before any engine or provider runs: the key,
the session's name, the audio, the agent's voice settings. Audio in which no speech is
heard is refused after speech-to-text, before a turn exists: nothing stored, nothing billed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from vocalbridge_common.idempotency import required_key
from vocalbridge_voice.agents_client import AgentVoices
from vocalbridge_voice.conversation_client import ConversationTurns, StoredTurn
from vocalbridge_voice.domain.audio import AudioLimits, Pcm, parse_wav
from vocalbridge_voice.domain.text import speakable
from vocalbridge_voice.domain.turns import Latency, NoSpeech, validate_session_name
from vocalbridge_voice.domain.voices import VoiceChoice
from vocalbridge_voice.service.speech import Capacity, Speech


@dataclass(frozen=True)
class SpokenTurn:
    turn: StoredTurn
    reply_audio: Pcm
    latency: Latency


class ConverseService:
    def __init__(
        self,
        turns: ConversationTurns,
        agents: AgentVoices,
        speech: Speech,
        capacity: Capacity,
        limits: AudioLimits,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._turns = turns
        self._agents = agents
        self._speech = speech
        self._capacity = capacity
        self._limits = limits
        self._monotonic = monotonic

    async def agent_voice(self, tenant_id: str, session_name: str, timeout: float) -> tuple[str, VoiceChoice]:
        """The session (checked as the caller: another tenant's is not found) and its agent's voice."""
        session = await self._turns.session(session_name, timeout)
        settings = await self._agents.of_version(tenant_id, session.agent, session.agent_version, timeout)
        choice = self._speech.catalogue.resolve_agent_voice(settings.agent, settings.voice, settings.words_per_minute)
        return session.name, choice

    async def converse(
        self, tenant_id: str, session_name: str, audio: bytes, idempotency_key: str | None, timeout: float
    ) -> SpokenTurn:
        key = required_key(idempotency_key)
        validate_session_name(session_name)
        pcm = parse_wav(audio, self._limits)
        async with self._capacity.slot():
            started = self._monotonic()
            session, voice = await self.agent_voice(tenant_id, session_name, timeout)
            transcript = await self._speech.transcribe(pcm)
            if not transcript.heard_speech or not transcript.text:
                raise NoSpeech()
            recognized = self._monotonic()
            turn = await self._turns.send(
                session, transcript.text, pcm.seconds, self._speech.speech_provider, key, timeout
            )
            replied = self._monotonic()
            reply = (
                await self._speech.synthesize(voice, turn.reply_text) if speakable(turn.reply_text) else Pcm(b"", 22050)
            )
            spoken = self._monotonic()
        return SpokenTurn(
            turn,
            reply,
            Latency(
                speech_recognized=recognized - started,
                first_reply_token=replied - started,
                first_reply_audio=spoken - started,
                total=spoken - started,
            ),
        )
