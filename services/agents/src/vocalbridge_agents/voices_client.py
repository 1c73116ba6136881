"""The voices installed in this deployment, as the voice service lists them (ListVoices), for
checking an agent's voice settings when the agent is saved.

Fetched with the service's own identity (no tenant: the list is the same for everyone) and
kept for a short time, so saving agents does not call the voice service each time and a
newly installed voice is accepted soon after the voice service restarts with it. When the
voice service is not configured (no VB_VOICE_ADDRESS) or cannot be reached, there is no
list: a well-formed voice name is accepted as before, and a spoken turn still refuses an
uninstalled one (AGENT_VOICE_NOT_INSTALLED). That is logged once per outage, not per save.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import grpc

from vocalbridge.voice.v1 import voice_service_pb2, voice_service_pb2_grpc
from vocalbridge_common import scopes
from vocalbridge_common.clients import service_metadata
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.pagination import MAX_PAGE_SIZE
from vocalbridge_common.voices import VoiceCatalogue, VoiceInfo

log = logging.getLogger(__name__)

CACHE_SECONDS = 30.0
# Saving an agent waits at most this long for the list; past it the save goes on without.
FETCH_TIMEOUT_SECONDS = 2.0
# After a failed fetch, saves go unchecked this long before the next try.
RETRY_SECONDS = 5.0


def catalogue_from_proto(message: voice_service_pb2.ListVoicesResponse) -> VoiceCatalogue:
    engines = tuple(dict.fromkeys(voice.engine for voice in message.voices))
    variants: dict[str, set[str]] = {engine: set() for engine in engines}
    voices = []
    for voice in message.voices:
        voices.append(VoiceInfo(voice.engine, voice.name.partition("/")[2], voice.language))
        variants[voice.engine].update(voice.variants)
    return VoiceCatalogue(
        engines=engines,
        voices=tuple(voices),
        default_voice=message.default_voice,
        variants={engine: frozenset(names) for engine, names in variants.items()},
    )


Fetch = Callable[[], Awaitable[VoiceCatalogue]]


class InstalledVoices:
    """The current catalogue, or None when there is none to check against."""

    def __init__(
        self,
        fetch: Fetch | None,
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cached: VoiceCatalogue | None = None
        self._fetched_at: float | None = None
        self._ttl = cache_seconds
        self._lock = asyncio.Lock()
        self._warned = False

    @classmethod
    def from_channel(cls, channel: grpc.aio.Channel, signer: IdentitySigner) -> InstalledVoices:
        stub = voice_service_pb2_grpc.VoiceServiceStub(channel)

        async def fetch() -> VoiceCatalogue:
            listed = voice_service_pb2.ListVoicesResponse()
            token = ""
            while True:
                response = await stub.ListVoices(
                    voice_service_pb2.ListVoicesRequest(page_size=MAX_PAGE_SIZE, page_token=token),
                    metadata=service_metadata(signer, "agents", {scopes.READ}),
                    timeout=FETCH_TIMEOUT_SECONDS,
                )
                listed.voices.extend(response.voices)
                listed.default_voice = response.default_voice
                token = response.next_page_token
                if not token:
                    return catalogue_from_proto(listed)

        return cls(fetch)

    async def catalogue(self) -> VoiceCatalogue | None:
        if self._fetch is None:
            self._warn_once("VB_VOICE_ADDRESS is not set")
            return None
        if self._fresh():
            return self._cached
        async with self._lock:
            if self._fresh():
                return self._cached
            try:
                catalogue: VoiceCatalogue | None = await self._fetch()
            except grpc.aio.AioRpcError as error:
                self._warn_once(f"the voice service could not list its voices ({error.code().name})")
                # No stale list (a voice removed since must not pass, one added must not be refused),
                # and another try only after a while, so that saves do not each wait for an outage.
                catalogue, self._ttl = None, RETRY_SECONDS
            else:
                self._warned, self._ttl = False, self._cache_seconds
            self._cached, self._fetched_at = catalogue, self._clock()
            return catalogue

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self._ttl

    def _warn_once(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("%s: agent voices are checked for their form only until it answers", why)
