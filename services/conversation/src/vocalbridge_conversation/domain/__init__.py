"""The conversation domain: values, validation and rules. Pure: no I/O, no protobuf.

- `sessions`: sessions and their messages, names, and what a new session may be.
- `turns`: one turn (what is asked, what it produced) and its validation.
- `history`: a session's messages as turns read them, numbered in commit order, and what a prompt can use.
- `prompt`: the provider request built from the history within the context budget.
- `usage`: the usage and cost of a turn, and the billing record it produces.
- `idempotency`: an idempotency key's record, a request's fingerprint, what a valid key is.
- `chat`: an OpenAI chat completion request (the OpenAI-compatible API), read and checked.
"""
