"""`make run`: the whole stack on this machine until Ctrl-C / SIGTERM.

SQLite under var/ by default; VB_DATABASE_URL=postgresql://… for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from vocalbridge_devstack.seed import seed_demo_tenant
from vocalbridge_devstack.stack import Stack, StackConfig


async def main() -> int:
    config = StackConfig(database_url=os.environ.get("VB_DATABASE_URL") or None)
    stack = Stack(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    backend = "PostgreSQL" if config.database_url else f"SQLite in {config.data_dir}"
    print(f"[stack] starting {', '.join(config.services)} and envoy on {backend}", flush=True)
    try:
        await stack.start()
        seed_demo_tenant(stack.base_url, stack.operator_key, config.data_dir)
    except Exception as exc:  # noqa: BLE001 - report and clean up whatever started
        print(f"[stack] start-up failed: {exc}", file=sys.stderr, flush=True)
        await stack.stop()
        return 1
    rel = os.path.relpath(config.data_dir)
    print(
        f"\nVocalBridge is ready at {stack.base_url}  (demo key in {rel}/demo-api-key, operator key in "
        f"{rel}/operator-api-key; Ctrl-C stops everything)\n"
        f"  console:  {stack.base_url}/  (log in with the demo key)   API document: {stack.base_url}/v1/openapi.json\n"
        f'  try:  curl -s -H "Authorization: Bearer $(cat {rel}/demo-api-key)" {stack.base_url}/v1/agents\n',
        flush=True,
    )
    await stop.wait()
    print("[stack] stopping…", flush=True)
    await stack.stop()
    print("[stack] stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
