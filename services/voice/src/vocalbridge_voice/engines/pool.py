"""The worker processes, as the service's event loop sees them.

Engine work is CPU-bound, so it runs in separate processes (fresh interpreters, not
forks: the service process has gRPC threads). Each worker has a role and loads only its
role's engines, once: speech-to-text workers the recognizer and the voice activity detector
(transcription and streams), text-to-speech workers the voices. So a model sits in memory
once per worker of its kind, not in every worker, and a turn's recognition and its reply's
synthesis run side by side. A job goes to the worker of its role with the fewest jobs
waiting; a stream's jobs all go to the worker that holds its state. Each worker has one
thread of the service process that sends it a job and waits for the answer, so the event
loop never blocks on a pipe. A worker that dies is started again on its next job; the job
it was running fails with UNAVAILABLE.

Jobs a caller is waiting on right now go first: a stream's audio (it arrives in real time)
and the first piece of a reply (the voice-to-voice latency) are `urgent`, and pass the
queued jobs that are not (the rest of a reply, which has playback time in hand; a whole
clip to transcribe or synthesize). A job that has started runs to its end.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from vocalbridge_common.config import ConfigError
from vocalbridge_common.errors import Unavailable
from vocalbridge_voice.engines.spec import ROLES, STT, TTS, EngineSpec

log = logging.getLogger(__name__)

# Time a worker may take to load its models before the service gives up starting.
START_TIMEOUT_SECONDS = 120.0


class EngineFailed(RuntimeError):
    """A job raised inside the worker: `kind` is the exception's class name there."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class Turnstile:
    """One job at a time; the next is the most urgent of those waiting, in order of arrival
    among equals."""

    def __init__(self) -> None:
        self._busy = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def enter(self, urgent: bool) -> None:
        if not self._busy and not self._waiting:
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (0 if urgent else 1, next(self._arrivals), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.leave()  # given the turn as it was cancelled: pass it on
            raise

    def leave(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():  # a waiter cancelled while queued is skipped
                turn.set_result(None)
                return
        self._busy = False


class _Worker:
    def __init__(self, index: int, role: str, spec: EngineSpec) -> None:
        self.index = index
        self.role = role
        self.spec = spec
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"voice-{role}-worker-{index}")
        self.turnstile = Turnstile()
        self.process: subprocess.Popen[bytes] | None = None
        self.connection: Connection | None = None
        self.waiting = 0
        self.streams = 0
        self.description: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        """Starts the process and waits until its engines are loaded (runs on self.thread)."""
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", "vocalbridge_voice.engines.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            # No preexec_fn: Python code between fork and exec is unsafe in a process with
            # threads. A worker whose service dies sees its socket close and exits.
        )
        theirs.close()
        parent = Connection(ours.detach())
        parent.send((self.spec, self.role))
        if not parent.poll(START_TIMEOUT_SECONDS):
            process.kill()
            raise ConfigError(f"{self} did not load its engines within {START_TIMEOUT_SECONDS:g}s")
        try:
            status, payload = parent.recv()
        except EOFError:
            process.wait(5)
            raise ConfigError(f"{self} exited while loading (code {process.returncode})") from None
        if status != "ready":
            process.wait(5)
            raise ConfigError(f"speech engines cannot start: {payload}")
        self.process, self.connection, self.description = process, parent, payload
        return dict(payload)

    def call(self, operation: str, args: tuple[Any, ...]) -> Any:
        """One job, start to finish (runs on self.thread)."""
        if self.process is None or self.process.poll() is not None or self.connection is None:
            log.warning("%s is not running; starting it again", self)
            self.stop()
            self.start()
        assert self.connection is not None
        try:
            self.connection.send((operation, args))
            answer = self.connection.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.stop()
            raise Unavailable(
                "a speech worker stopped during the request; retry", reason="SPEECH_ENGINE_FAILED"
            ) from None
        if answer[0] == "ok":
            return answer[1]
        raise EngineFailed(answer[1], answer[2])

    def __str__(self) -> str:
        return f"speech worker {self.index} ({self.role})"

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
        self.process, self.connection = None, None


@dataclass(frozen=True)
class StreamHandle:
    """A stream's place in the pool: the worker that holds its state."""

    stream_id: str
    worker: int


class EnginePool:
    """`workers[role]` processes of each role (STT, TTS)."""

    def __init__(self, spec: EngineSpec, workers: dict[str, int]) -> None:
        unknown = set(workers) - set(ROLES)
        if unknown or any(workers.get(role, 0) < 1 for role in ROLES):
            raise ConfigError(f"the speech worker pool needs at least one process of each role ({', '.join(ROLES)})")
        self._workers: list[_Worker] = []
        for role in ROLES:
            self._workers += [_Worker(len(self._workers), role, spec) for _ in range(workers[role])]
        self._ids = itertools.count(1)
        self.description: dict[str, Any] = {}

    def _of(self, role: str) -> list[_Worker]:
        return [worker for worker in self._workers if worker.role == role]

    async def start(self) -> None:
        """Starts every worker; a missing engine, model or voice fails with its name."""
        loop = asyncio.get_running_loop()
        started = await asyncio.gather(
            *(loop.run_in_executor(worker.thread, worker.start) for worker in self._workers), return_exceptions=True
        )
        for outcome in started:
            if isinstance(outcome, BaseException):
                await self.stop()
                raise outcome
        # What the service may ask for: the recognizers of the one role, the voices of the other.
        self.description = {"stt": self._of(STT)[0].description["stt"], "tts": self._of(TTS)[0].description["tts"]}

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            await loop.run_in_executor(worker.thread, worker.stop)
            worker.thread.shutdown(wait=False)

    async def _run(self, worker: _Worker, operation: str, *args: Any, urgent: bool = False) -> Any:
        worker.waiting += 1
        try:
            await worker.turnstile.enter(urgent)
            job = asyncio.get_running_loop().run_in_executor(worker.thread, worker.call, operation, args)

            def done(finished: asyncio.Future[Any]) -> None:
                if not finished.cancelled():
                    finished.exception()  # retrieved: a caller that left does not want it
                worker.turnstile.leave()

            # The worker finishes a job whatever happens to its caller (a barge-in cancels the
            # reply being synthesized): the next job starts when it is done, not before.
            job.add_done_callback(done)
            return await asyncio.shield(job)
        finally:
            worker.waiting -= 1

    async def run(self, role: str, operation: str, *args: Any, urgent: bool = False) -> Any:
        """A stateless job on the least busy worker of `role`."""
        worker = min(self._of(role), key=lambda w: (w.waiting, w.streams))
        return await self._run(worker, operation, *args, urgent=urgent)

    async def open_stream(self, engine: str, sample_rate: int) -> StreamHandle:
        worker = min(self._of(STT), key=lambda w: (w.streams, w.waiting))
        handle = StreamHandle(f"s{next(self._ids)}", worker.index)
        await self._run(worker, "stream_open", handle.stream_id, engine, sample_rate, urgent=True)
        worker.streams += 1
        return handle

    async def feed_stream(self, handle: StreamHandle, pcm: bytes) -> list[tuple[Any, ...]]:
        events: list[tuple[Any, ...]] = await self._run(
            self._workers[handle.worker], "stream_feed", handle.stream_id, pcm, urgent=True
        )
        return events

    async def close_stream(self, handle: StreamHandle) -> None:
        worker = self._workers[handle.worker]
        worker.streams -= 1
        await self._run(worker, "stream_close", handle.stream_id, urgent=True)
