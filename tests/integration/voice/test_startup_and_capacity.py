"""The voice service refuses to start without its engines, naming what is missing (not at the
first call), and refuses work past its limits with RESOURCE_EXHAUSTED and a reason instead of
queueing it. Real worker processes: a missing package is one the worker cannot import."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.integration.voice.conftest import voice_settings, wav_frames
from tests.support import error_reason
from vocalbridge.voice.v1 import voice_service_pb2 as pb
from vocalbridge.voice.v1 import voice_service_pb2_grpc
from vocalbridge_common.config import ConfigError, Env
from vocalbridge_voice.config import VoiceSettings
from vocalbridge_voice.engines.pool import EnginePool
from vocalbridge_voice.engines.worker import STT, TTS, EngineSpec
from vocalbridge_voice.server import create_server


async def test_a_voice_that_is_not_installed_stops_the_start_naming_it():
    pool = EnginePool(
        EngineSpec(stt=("pocketsphinx",), tts=("piper",), piper_voices=("en_GB-nobody-low",)), {STT: 1, TTS: 1}
    )
    with pytest.raises(ConfigError, match="piper voice 'en_GB-nobody-low' is not known"):
        await pool.start()


async def test_an_engine_whose_package_is_missing_stops_the_start_naming_it(tmp_path, monkeypatch):
    # The workers are fresh interpreters: a module first on their path that fails to import
    # is, to them, a package that is not installed.
    (tmp_path / "espeakng_loader.py").write_text("raise ImportError('No module named espeakng_loader')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    pool = EnginePool(EngineSpec(stt=("pocketsphinx",), tts=("espeak",)), {STT: 1, TTS: 1})
    with pytest.raises(ConfigError, match="text-to-speech engine 'espeak': package espeakng-loader"):
        await pool.start()


def test_an_unknown_engine_in_the_configuration_is_named():
    with pytest.raises(
        ConfigError, match=r"VB_VOICE_TTS_ENGINES must name one or more of piper, espeak .got espeak, festival"
    ):
        VoiceSettings.from_env(Env({"VB_IDENTITY_SECRET": "x" * 32, "VB_VOICE_TTS_ENGINES": "espeak,festival"}))
    with pytest.raises(ConfigError, match="VB_VOICE_STT_ENGINE 'whisper' is not among"):
        VoiceSettings.from_env(
            Env(
                {
                    "VB_IDENTITY_SECRET": "x" * 32,
                    "VB_VOICE_STT_ENGINES": "pocketsphinx",
                    "VB_VOICE_STT_ENGINE": "whisper",
                }
            )
        )


@pytest.fixture(scope="module")
async def small_voice(pg_url, backends):
    """A voice server that takes one stream and one request at a time."""
    running = await create_server(
        voice_settings(pg_url, backends, VB_VOICE_MAX_STREAMS="1", VB_VOICE_MAX_REQUESTS="1"), run_relay=False
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield voice_service_pb2_grpc.VoiceServiceStub(channel)
    await running.stop(0)


async def test_a_stream_past_the_limit_is_refused_not_queued(small_voice, new_session, spoken, md):
    _, session = await new_session()
    samples, rate = wav_frames(await spoken("Hello there."))
    first: asyncio.Queue = asyncio.Queue()
    first.put_nowait(
        pb.StreamingConverseRequest(config=pb.StreamingConverseConfig(session=session.name, sample_rate_hertz=rate))
    )
    first.put_nowait(pb.StreamingConverseRequest(audio=samples))

    async def requests(queue):
        while (item := await queue.get()) is not None:
            yield item

    holding = small_voice.StreamingConverse(requests(first), metadata=md, timeout=60)
    event = await holding.read()
    assert event.WhichOneof("event") == "speech_started"  # the first stream is in progress

    async def second():
        yield pb.StreamingConverseRequest(
            config=pb.StreamingConverseConfig(session=session.name, sample_rate_hertz=rate)
        )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in small_voice.StreamingConverse(second(), metadata=md, timeout=30):
            pass
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(caught.value) == "VOICE_CAPACITY_EXHAUSTED"
    first.put_nowait(None)  # the caller hangs up (nothing was said to the end): the slot is free again
    while await holding.read() is not grpc.aio.EOF:
        pass
    again: asyncio.Queue = asyncio.Queue()
    again.put_nowait(
        pb.StreamingConverseRequest(config=pb.StreamingConverseConfig(session=session.name, sample_rate_hertz=rate))
    )
    again.put_nowait(None)
    async for _ in small_voice.StreamingConverse(requests(again), metadata=md, timeout=30):
        pass


async def test_requests_past_the_limit_are_refused_not_queued(small_voice, md):
    text = "A longer sentence, spoken in the natural voice, so that the first request is still running. " * 3
    outcomes = await asyncio.gather(
        *(
            small_voice.Synthesize(pb.SynthesizeRequest(text=text, voice="piper/en_US-joe-medium"), metadata=md)
            for _ in range(3)
        ),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    done = [o for o in outcomes if isinstance(o, pb.SynthesizeResponse)]
    assert len(done) >= 1 and len(done) + len(refused) == 3 and refused
    assert {(e.code(), error_reason(e)) for e in refused} == {
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "VOICE_CAPACITY_EXHAUSTED")
    }
