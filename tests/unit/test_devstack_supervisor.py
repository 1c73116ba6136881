"""The development stack's supervisor restarts a child that dies with a growing delay, and starts
that delay again from the shortest once a replacement has run well for a while (as the kubelet does)."""

import asyncio
import sys

from vocalbridge_devstack import stack as stack_module
from vocalbridge_devstack.stack import Child, Stack, StackConfig


async def test_a_child_crashing_again_and_again_waits_longer_each_time(tmp_path):
    counts = await asyncio.wait_for(_counts_over(tmp_path, 2.5), 30)
    # 0.5 s, then 1 s before the next start: two restarts fit in 2.5 s, counted 1, 2.
    assert counts[:2] == [1, 2], counts


async def test_a_child_that_ran_well_starts_its_back_off_anew(tmp_path, monkeypatch):
    monkeypatch.setattr(stack_module, "HEALTHY_RUN_S", 0.05)  # every 0.1 s run counts as healthy
    counts = await asyncio.wait_for(_counts_over(tmp_path, 3.0), 30)
    # Without the reset the second restart would be counted 2 (and wait 1 s instead of 0.5 s).
    assert len(counts) >= 2 and set(counts) == {1}, counts


async def _counts_over(tmp_path, seconds: float) -> list[int]:
    """The restart count each time the supervisor restarted the crashing child within `seconds`."""
    stack = Stack(StackConfig(data_dir=tmp_path, log_dir=tmp_path / "logs"))
    child = Child("crasher", [sys.executable, "-c", "import time; time.sleep(0.1)"], env={})
    stack.children[child.name] = child
    await stack._spawn(child)
    supervisor = asyncio.create_task(stack._supervise())
    counts: list[int] = []
    last_process = child.process
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    try:
        while loop.time() < end:
            await asyncio.sleep(0.02)
            if child.process is not last_process:
                last_process = child.process
                counts.append(child.restarts)
    finally:
        supervisor.cancel()
        child.stopping = True
        if child.process is not None and child.process.returncode is None:
            child.process.kill()
            await child.process.wait()
    return counts
