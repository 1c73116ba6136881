"""The conversation use cases. Each takes the tenant as an argument, opens its
transactions, and takes and returns domain values (never protobuf).

- `sessions`: create, get and list sessions; list a session's messages.
- `turns`: one turn, sent whole or streamed, run once per idempotency key.
- `idempotency`: claiming an idempotency key (run, replay, refuse, take over).
"""
