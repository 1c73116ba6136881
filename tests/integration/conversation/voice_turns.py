"""The voice service's side of conversation's internal StreamVoiceTurn, for tests: a spoken
turn sent with an identity minted for the tenant with the internal scope (as
`clients.internal_metadata` does), its reply read, and its playback reported."""

from __future__ import annotations

from vocalbridge.conversation.v1 import conversation_service_pb2 as cs
from vocalbridge_common.headers import IDEMPOTENCY_KEY_HEADER, IDENTITY_HEADER
from vocalbridge_common.identity import IdentitySigner


def as_voice_service(signer: IdentitySigner, tenant_id: str, key: str) -> tuple[tuple[str, str], ...]:
    """Metadata of the voice service calling for a caller of `tenant_id` with the write scope,
    with an idempotency key."""
    token = signer.mint(tenant_id, "key_test", {"write", "internal"})
    return ((IDENTITY_HEADER, token), (IDEMPOTENCY_KEY_HEADER, key))


async def spoken_turn(
    stub, metadata, session: str, content: str, audio_seconds: float, spoken: int | None = None, speech_provider=""
) -> tuple[cs.VoiceTurnResult, str]:
    """Runs one spoken turn; the caller hears the whole reply (`spoken` None) or speaks over it
    once it is generated, after `spoken` characters. (result, the reply text as streamed)."""
    call = stub.StreamVoiceTurn(metadata=metadata, timeout=30)
    await call.write(
        cs.StreamVoiceTurnRequest(
            turn=cs.VoiceTurnStart(
                session=session,
                content=content,
                voice=cs.VoiceTurn(audio_seconds=audio_seconds, speech_provider=speech_provider),
            )
        )
    )
    text = ""
    async for event in call:
        kind = event.WhichOneof("event")
        if kind == "text_delta":
            text += event.text_delta
        elif kind == "restart":
            text = ""
        elif kind == "reply_generated":
            assert event.reply_generated.characters == len(text)
            playback = (
                cs.ReplyPlayback(interrupted=False)
                if spoken is None
                else cs.ReplyPlayback(interrupted=True, spoken_characters=spoken)
            )
            await call.write(cs.StreamVoiceTurnRequest(playback=playback))
            await call.done_writing()
        elif kind == "result":
            return event.result, text
    raise AssertionError("the stream ended without a result")
