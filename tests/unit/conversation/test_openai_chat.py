"""The OpenAI-compatible API's pieces without a stack: an OpenAI request read and checked whole
(every problem at once, unsupported fields named, never ignored), the request's parameters
applied within the agent's bounds, the chunks of a stream and the replay of a stored
completion, a refusal rendered in OpenAI's error shape with the SDKs' retry hints, and what the
servicer's stream gives a client when a completion fails before or after its first text."""

from __future__ import annotations

import json

import pytest
from google.api.httpbody_pb2 import HttpBody

from vocalbridge.openai.v1 import openai_service_pb2 as pb
from vocalbridge_common.context import identity_var
from vocalbridge_common.errors import (
    AgentNotFound,
    BudgetExceeded,
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from vocalbridge_common.headers import OPENAI_ERROR_HEADER, SHOULD_RETRY_HEADER
from vocalbridge_common.idempotency import Replay
from vocalbridge_common.identity import Identity
from vocalbridge_common.json_limits import MAX_JSON_DEPTH
from vocalbridge_common.openai_errors import openai_error, openai_error_headers
from vocalbridge_conversation.delivery import Delta, Restart
from vocalbridge_conversation.domain.chat import UnsupportedParameter, parse_chat_request
from vocalbridge_conversation.domain.prompt import MAX_OUTPUT_TOKENS, apply_overrides, completion_prompt
from vocalbridge_conversation.domain.turns import AgentConfig, Overrides
from vocalbridge_conversation.openai_presenters import ChunkWriter, replay_chunks
from vocalbridge_conversation.openai_servicer import OpenAIServicer
from vocalbridge_conversation.providers.base import ChatMessage
from vocalbridge_conversation.service.completions import CompletionMeta, Streaming

AGENT = AgentConfig(
    agent_id="agt_x",
    version=3,
    system_prompt="Be brief.",
    primary_provider="vendorA",
    fallback_provider=None,
    model="",
    temperature=0.5,
    top_p=None,
    max_output_tokens=64,
)
HELLO = [{"role": "user", "content": "Hi"}]
AGENT_ID = "agt_01m8ayhnq7cnxjtzq3540zs2zh"


def body(**fields) -> bytes:
    return json.dumps({"model": f"agents/{AGENT_ID}", "messages": HELLO, **fields}).encode()


def refusal(raw: bytes) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as refused:
        parse_chat_request(raw)
    return refused.value


def test_a_full_request_is_read():
    chat = parse_chat_request(
        body(
            messages=[
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": [{"type": "text", "text": "Bon"}, {"type": "text", "text": "jour"}]},
                {"role": "assistant", "content": "Salut"},
                {"role": "user", "content": "Ça va ?"},
            ],
            temperature=0.2,
            top_p=0.9,
            max_completion_tokens=10,
            stop="END",
            user="u-1",
            n=1,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chat.agent() == AGENT_ID and chat.stream and chat.include_usage
    assert chat.messages == (
        ChatMessage("system", "Answer in French."),
        ChatMessage("user", "Bonjour"),
        ChatMessage("assistant", "Salut"),
        ChatMessage("user", "Ça va ?"),
    )
    assert chat.overrides == Overrides(temperature=0.2, top_p=0.9, max_output_tokens=10, stop=("END",), user="u-1")


def test_the_bare_agent_id_names_the_agent_and_anything_else_is_not_found():
    assert parse_chat_request(body(model=AGENT_ID)).agent() == AGENT_ID
    for model in ("gpt-4o", "agents/", "agt_x", f"sessions/{AGENT_ID}", f"agents/{AGENT_ID}/x"):
        with pytest.raises(AgentNotFound):
            parse_chat_request(body(model=model)).agent()


def test_unsupported_fields_are_refused_by_name_all_at_once():
    error = refusal(
        body(
            tools=[],
            n=2,
            response_format={"type": "json_object"},
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}], "name": "a"}],
        )
    )
    assert isinstance(error, UnsupportedParameter) and error.reason == "UNSUPPORTED_PARAMETER"
    fields = [v.field for v in error.field_violations]
    assert fields[0] == "tools"  # OpenAI's `param`: the first
    assert set(fields) == {"tools", "n", "response_format", "messages[0].name", "messages[0].content[0].type"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"temperature": 2.1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": 5, "max_completion_tokens": 5}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop[0]"),
        ({"stop": []}, "stop"),
        ({"user": "u" * 201}, "user"),
        ({"stream": 1}, "stream"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": ""}, "model"),
        ({"model": 7}, "model"),
        ({"messages": "Hi"}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "a\x00b"}]}, "messages[0].content"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(fields, field):
    error = refusal(body(**fields))
    assert field in [v.field for v in error.field_violations], error.field_violations


@pytest.mark.parametrize(
    "raw", [b"", b"  ", b"{", b"[]", b"null", b'"x"', b"\xff", b'{"a": 1, "a": 2}', b'{"model": NaN}', b"[" * 100_000]
)
def test_a_body_that_is_not_one_json_object_is_refused(raw):
    error = refusal(raw)
    assert error.reason == "INVALID_REQUEST_BODY" and error.field_violations[0].field == "body"


def test_a_body_nested_past_the_edges_bound_is_refused_like_any_other_json_body():
    """The same nesting bound as every JSON body the edge reads (json_limits.MAX_JSON_DEPTH)."""
    nested = {"role": "user", "content": "Hi", "metadata": {}}
    deep: dict = nested["metadata"]
    for _ in range(MAX_JSON_DEPTH):
        deep["x"] = {}
        deep = deep["x"]
    error = refusal(json.dumps({"model": f"agents/{AGENT_ID}", "messages": [nested]}).encode())
    assert error.reason == "INVALID_REQUEST_BODY" and "nests too deeply" in error.field_violations[0].description


def test_the_agents_system_prompt_comes_first_and_overrides_stay_within_its_bounds():
    chat = parse_chat_request(body(temperature=0, max_tokens=64, stop=["x"], user="u"))
    request = apply_overrides(completion_prompt(AGENT, chat.messages), AGENT, chat.overrides)
    assert request.messages == (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"))
    assert (request.temperature, request.max_output_tokens, request.stop, request.user) == (0.0, 64, ("x",), "u")
    # Without overrides the agent's parameters apply.
    plain = apply_overrides(completion_prompt(AGENT, chat.messages), AGENT, Overrides())
    assert (plain.temperature, plain.max_output_tokens, plain.stop, plain.user) == (0.5, 64, (), None)
    with pytest.raises(InvalidArgument) as too_many:
        apply_overrides(plain, AGENT, Overrides(max_output_tokens=65))
    assert too_many.value.field_violations[0].field == "max_tokens"
    unbounded = AgentConfig(**{**AGENT.__dict__, "max_output_tokens": None})
    assert apply_overrides(plain, unbounded, Overrides(max_output_tokens=MAX_OUTPUT_TOKENS)).max_output_tokens == (
        MAX_OUTPUT_TOKENS
    )
    with pytest.raises(InvalidArgument):
        apply_overrides(plain, unbounded, Overrides(max_output_tokens=MAX_OUTPUT_TOKENS + 1))


def events(raw: bytes) -> list[str]:
    parts = raw.decode().split("\n\n")
    assert parts[-1] == "" and all(p.startswith("data: ") for p in parts[:-1]), raw
    return [p[6:] for p in parts[:-1]]


def test_a_stream_is_openais_chunks_with_the_usage_chunk_last():
    writer = ChunkWriter(CompletionMeta("chatcmpl-1", 1700000000, "agents/agt_x", None), include_usage=True)
    raw = writer.text("Hel") + writer.text("lo") + writer.finish("stop", {"provider": "vendorA"}, {"total_tokens": 3})
    *chunks, done = events(raw)
    assert done == "[DONE]"
    docs = [json.loads(c) for c in chunks]
    assert {d["id"] for d in docs} == {"chatcmpl-1"} and {d["object"] for d in docs} == {"chat.completion.chunk"}
    assert docs[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    assert docs[1]["choices"][0]["delta"] == {"content": "lo"}
    assert docs[2]["choices"][0]["finish_reason"] == "stop" and docs[2]["vocalbridge"] == {"provider": "vendorA"}
    assert [d["usage"] for d in docs] == [None, None, None, {"total_tokens": 3}] and docs[3]["choices"] == []
    # Without include_usage: no usage field and no usage chunk.
    plain = ChunkWriter(CompletionMeta("chatcmpl-2", 1, "m", None), include_usage=False)
    docs = [json.loads(c) for c in events(plain.text("x") + plain.finish("length", {}, {}))[:-1]]
    assert len(docs) == 2 and all("usage" not in d for d in docs)


def test_a_stored_completion_replays_as_chunks():
    stored = json.dumps(
        {
            "id": "chatcmpl-9",
            "created": 5,
            "model": "agt_x",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "All done."}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
            "vocalbridge": {"provider": "vendorB"},
        }
    ).encode()
    *chunks, done = events(replay_chunks(stored, include_usage=True))
    docs = [json.loads(c) for c in chunks]
    assert done == "[DONE]" and "".join(d["choices"][0]["delta"].get("content", "") for d in docs if d["choices"]) == (
        "All done."
    )
    assert docs[-1]["usage"]["total_tokens"] == 4 and {d["id"] for d in docs} == {"chatcmpl-9"}


def test_refusals_in_openais_shape_with_the_retry_hint():
    bad = openai_error_headers(
        InvalidArgument("no", reason="UNSUPPORTED_PARAMETER", field_violations=refusal(body(tools=[])).field_violations)
    )
    assert json.loads(bad[OPENAI_ERROR_HEADER]) == {
        "error": {"message": "no", "type": "invalid_request_error", "param": "tools", "code": "unsupported_parameter"}
    }
    assert bad[SHOULD_RETRY_HEADER] == "false"
    assert openai_error(AgentNotFound("agents/agt_x"))["error"]["code"] == "model_not_found"
    assert openai_error(PermissionDenied("no"))["error"]["type"] == "permission_error"
    limited = openai_error_headers(RateLimited("slow down", retry_after_seconds=2, metadata={}, headers={}))
    assert json.loads(limited[OPENAI_ERROR_HEADER])["error"]["type"] == "rate_limit_error"
    assert SHOULD_RETRY_HEADER not in limited  # waiting helps: the SDK retries after Retry-After
    broke = openai_error_headers(BudgetExceeded("spent", metadata={}))
    assert json.loads(broke[OPENAI_ERROR_HEADER])["error"]["type"] == "insufficient_quota"
    assert broke[SHOULD_RETRY_HEADER] == "false"
    # A header value is one printable ASCII line, whatever the message holds.
    odd = openai_error_headers(InvalidArgument("line\nbreak é \x7f" + "x" * 5000))[OPENAI_ERROR_HEADER]
    assert odd.isascii() and odd.isprintable() and len(odd) < 1200


# -- the servicer's stream: what the client sees when a completion fails ----------------------


class FakeContext:
    def __init__(self) -> None:
        self.initial: tuple = ()

    def invocation_metadata(self):
        return ()

    def time_remaining(self):
        return None

    async def send_initial_metadata(self, metadata) -> None:
        self.initial = metadata


class FakeCompletions:
    def __init__(self, outcome) -> None:
        self.outcome = outcome

    async def create(self, tenant_id, chat, **_):
        assert tenant_id == "ten_1"
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


async def stream_of(outcome, fields=None) -> tuple[list[bytes], Exception | None, FakeContext]:
    token = identity_var.set(Identity("ten_1", "key_1", frozenset({"write"}), 2**40))
    context = FakeContext()
    out: list[bytes] = []
    error = None
    try:
        request = pb.CreateChatCompletionRequest(body=HttpBody(data=body(stream=True, **(fields or {}))))
        async for part in OpenAIServicer(FakeCompletions(outcome)).CreateChatCompletion(request, context):
            out.append(part.data)
    except Exception as raised:  # noqa: BLE001 - the test looks at it
        error = raised
    finally:
        identity_var.reset(token)
    return out, error, context


def streaming(*items):
    meta = CompletionMeta("chatcmpl-s", 1, "m", None)
    closed = []

    async def events():
        try:
            for item in items:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            closed.append(True)  # the turn's generator is closed: it releases what it holds

    return Streaming(meta, events()), closed


async def test_a_refusal_before_the_first_text_keeps_its_status_and_openais_error():
    out, error, _ = await stream_of(AgentNotFound("agents/agt_x"))
    assert out == [] and isinstance(error, AgentNotFound)
    assert json.loads(error.headers[OPENAI_ERROR_HEADER])["error"]["code"] == "model_not_found"


async def test_a_provider_failing_mid_reply_ends_the_stream_with_an_error_event_and_no_done():
    outcome, closed = streaming(Delta("Hel"), Restart(), Delta("Hello"))
    out, error, _ = await stream_of(outcome)
    assert isinstance(error, Unavailable) and error.reason == "PROVIDER_STREAM_INTERRUPTED"
    assert json.loads(events(out[0])[0])["choices"][0]["delta"]["content"] == "Hel"
    last = events(out[-1])
    assert json.loads(last[0])["error"]["code"] == "provider_stream_interrupted" and "[DONE]" not in last
    assert closed == [True]  # the turn was released: OpenAI's chunks cannot take text back


async def test_an_unexpected_failure_mid_reply_tells_the_client_only_that_it_failed():
    outcome, closed = streaming(Delta("Hel"), RuntimeError("database password is hunter2"))
    out, error, _ = await stream_of(outcome)
    assert isinstance(error, RuntimeError) and closed == [True]
    final = json.loads(events(out[-1])[0])["error"]
    assert final["type"] == "server_error" and "hunter2" not in final["message"]


async def test_a_replayed_completion_streams_with_the_replayed_header():
    stored = json.dumps(
        {
            "id": "chatcmpl-r",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()
    out, error, context = await stream_of(Replay(stored))
    assert error is None and context.initial == (("idempotent-replayed", "true"),)
    assert events(b"".join(out))[-1] == "[DONE]"
