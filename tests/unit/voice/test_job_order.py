"""The order in which a speech worker takes its jobs: one at a time; urgent jobs (a stream's
audio, the first piece of a reply) before queued ones that are not; arrival order among
equals; a caller that gives up while queued loses its place without blocking the others."""

from __future__ import annotations

import asyncio

from vocalbridge_voice.engines.pool import Turnstile


async def _job(turnstile: Turnstile, name: str, urgent: bool, ran: list[str], release: asyncio.Event) -> None:
    await turnstile.enter(urgent)
    ran.append(name)
    await release.wait()
    turnstile.leave()


async def test_urgent_jobs_pass_queued_ones_and_equals_keep_their_order():
    turnstile, ran, release = Turnstile(), [], asyncio.Event()
    running = asyncio.create_task(_job(turnstile, "running", False, ran, release))
    await asyncio.sleep(0)
    queued = []
    for name, urgent in (("rest-1", False), ("first-a", True), ("rest-2", False), ("first-b", True)):
        queued.append(asyncio.create_task(_job(turnstile, name, urgent, ran, release)))
        await asyncio.sleep(0)
    assert ran == ["running"]  # one at a time: the others wait
    release.set()
    await asyncio.gather(running, *queued)
    assert ran == ["running", "first-a", "first-b", "rest-1", "rest-2"]


async def test_a_caller_that_gives_up_while_queued_does_not_hold_up_the_rest():
    turnstile, ran, release = Turnstile(), [], asyncio.Event()
    running = asyncio.create_task(_job(turnstile, "running", False, ran, release))
    await asyncio.sleep(0)
    leaving = asyncio.create_task(_job(turnstile, "barged-in", True, ran, release))
    staying = asyncio.create_task(_job(turnstile, "next", False, ran, release))
    await asyncio.sleep(0)
    leaving.cancel()
    release.set()
    await asyncio.gather(running, staying)
    assert ran == ["running", "next"]
    assert leaving.cancelled()
    # Free again: the next job enters at once.
    await asyncio.wait_for(turnstile.enter(False), timeout=1)
    turnstile.leave()


async def test_a_caller_cancelled_as_its_turn_came_passes_the_turn_on():
    turnstile, ran, release = Turnstile(), [], asyncio.Event()
    await turnstile.enter(False)
    given = asyncio.create_task(turnstile.enter(True))
    waiting = asyncio.create_task(_job(turnstile, "after", False, ran, release))
    await asyncio.sleep(0)
    turnstile.leave()  # the turn goes to `given`…
    given.cancel()  # …which is cancelled before it resumes
    release.set()
    await asyncio.wait_for(waiting, timeout=1)
    assert ran == ["after"]
