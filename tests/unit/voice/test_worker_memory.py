"""A speech worker gives back, once idle, the memory it kept for busy times: the worker loop
tidies after a quiet spell that follows work (not before any, not twice), PocketSphinx keeps
one spare decoder (each holds its own copy of the model), and Piper's next run shrinks its
onnxruntime arena once, not every run. With fakes: no model is loaded."""

from __future__ import annotations

from collections import deque
from typing import Any

from vocalbridge_voice.engines.piper import _Session
from vocalbridge_voice.engines.pocketsphinx import PocketsphinxStt
from vocalbridge_voice.engines.worker import serve


class FakeConnection:
    """A pipe that plays a script: a job (operation, args), or None for a quiet spell (poll times out)."""

    def __init__(self, *script: tuple[str, tuple[Any, ...]] | None) -> None:
        self.script = deque(script)
        self.sent: list[Any] = []

    def poll(self, timeout: float) -> bool:
        if self.script and self.script[0] is None:
            self.script.popleft()
            return False
        return True

    def recv(self) -> Any:
        while self.script and self.script[0] is None:
            self.script.popleft()  # a quiet spell nobody polled for: the worker was waiting anyway
        if not self.script:
            raise EOFError
        return self.script.popleft()

    def send(self, message: Any) -> None:
        self.sent.append(message)


class FakeWorker:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.operations = {"synthesize": lambda text: self.log.append(f"synthesize {text}") or text.upper()}

    def tidy(self) -> None:
        self.log.append("tidy")


def test_the_worker_tidies_after_a_quiet_spell_that_follows_work():
    worker = FakeWorker()
    connection = FakeConnection(
        None,  # idle before any work: nothing to give back
        ("synthesize", ("a",)),
        ("synthesize", ("b",)),
        None,  # quiet after work: tidy
        None,  # still quiet: nothing new to give back
        ("synthesize", ("c",)),
        None,
    )
    serve(connection, worker, idle_tidy_seconds=30)  # type: ignore[arg-type]
    assert worker.log == ["synthesize a", "synthesize b", "tidy", "synthesize c", "tidy"]
    assert connection.sent == [("ok", "A"), ("ok", "B"), ("ok", "C")]


def test_pocketsphinx_keeps_one_spare_decoder_when_idle():
    class Decoder:
        def __init__(self, **config: Any) -> None: ...

        def start_utt(self) -> None: ...

        def end_utt(self) -> None: ...

        def hyp(self) -> None:
            return None

    engine = PocketsphinxStt.__new__(PocketsphinxStt)
    engine._decoder_class = Decoder
    engine._free = [Decoder()]
    streams = [engine.open_stream() for _ in range(3)]  # three utterances heard at once
    for stream in streams:
        stream.finish()
    assert len(engine._free) == 3
    engine.tidy()
    assert len(engine._free) == 1


def test_piper_shrinks_its_arena_on_the_next_run_only():
    class Session:
        def __init__(self) -> None:
            self.options: list[Any] = []

        def run(self, outputs: Any, inputs: Any, options: Any = None) -> str:
            self.options.append(options)
            return "audio"

        def get_inputs(self) -> list[str]:
            return ["input"]

    inner = Session()
    session = _Session(inner, run_options="shrink")
    session.run(None, {})
    session.shrink_next = True
    session.run(None, {})
    session.run(None, {})
    assert inner.options == [None, "shrink", None]
    assert session.get_inputs() == ["input"]  # everything else is the session's own
