"""What every HTTP provider adapter shares: a JSON POST, plain or read as server-sent
events, under one overall deadline, with every failure turned into a `ProviderError`.

  timeout (connect, read or overall)      → TIMEOUT
  connection refused / reset / protocol   → UNAVAILABLE
  429                                     → RATE_LIMITED, retry_after from the headers
  408, 409, 5xx                           → UNAVAILABLE (retry_after when sent)
  the adapter's authentication statuses   → AUTHENTICATION
  other 4xx                               → BAD_REQUEST
  a body that is not JSON, other errors   → PROVIDER_ERROR

The adapters keep what is their API's own: the request, how a reply or an event reads,
and how an error body reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from typing import Any

import httpx

from vocalbridge_conversation.providers.base import (
    Completion,
    CompletionRequest,
    FailureKind,
    ProviderError,
    count_prompt_tokens,
    count_tokens,
)

MAX_ERROR_CHARS = 300

# How an adapter turns a non-2xx reply (status, headers, body) into its failure.
StatusFailure = Callable[[int, httpx.Headers, bytes], ProviderError]


class HttpEndpoint:
    """One provider URL, posted to with fixed headers on a client shared and owned by the caller."""

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        url: str,
        headers: Mapping[str, str],
        status_failure: StatusFailure,
    ) -> None:
        self._name = name
        self._client = client
        self._url = url
        self._headers = dict(headers)
        self._status_failure = status_failure

    async def post(self, payload: Mapping[str, Any], timeout: float) -> Any:
        """The JSON body of a successful reply to `payload`, all within `timeout` seconds."""
        try:
            # httpx's timeout bounds each phase (connect, each read); asyncio's the whole call.
            async with asyncio.timeout(timeout):
                response = await self._client.post(
                    self._url, json=payload, headers=self._headers, timeout=httpx.Timeout(timeout)
                )
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(FailureKind.TIMEOUT, f"{self._name} did not answer within {timeout:.3f}s") from None
        except httpx.HTTPError as error:
            raise transport_failure(self._name, error) from None
        if not response.is_success:
            raise self._status_failure(response.status_code, response.headers, response.content)
        with reading_reply(self._name):
            body = response.json()
        return body

    @contextlib.asynccontextmanager
    async def events(self, payload: Mapping[str, Any], timeout: float) -> AsyncIterator[SseData]:
        """The `data:` payloads of a successful event-stream reply to `payload`. Opening the
        stream and every read must be done `timeout` seconds from now; the code between reads
        (the block's, and the consumer's while an adapter's generator is suspended) is never
        under that deadline. A timeout or transport error in the block fails it, too."""
        ends_at = asyncio.get_running_loop().time() + timeout
        try:
            async with asyncio.timeout_at(ends_at):
                context = self._client.stream(
                    "POST", self._url, json=payload, headers=self._headers, timeout=httpx.Timeout(timeout)
                )
                response = await context.__aenter__()
            try:
                if not response.is_success:
                    async with asyncio.timeout_at(ends_at):
                        content = await response.aread()
                    raise self._status_failure(response.status_code, response.headers, content)
                yield SseData(response.aiter_lines(), ends_at)
            finally:
                await context.__aexit__(None, None, None)
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(FailureKind.TIMEOUT, f"{self._name} did not finish within {timeout:.3f}s") from None
        except httpx.HTTPError as error:
            raise transport_failure(self._name, error) from None


class SseData:
    """The payloads of an event stream's `data:` lines, in order; blank lines, comments and
    other fields (`event:`, `id:`) are passed over. Each read is bounded by the stream's
    deadline, which never covers the consumer's code between reads."""

    def __init__(self, lines: AsyncIterator[str], ends_at: float) -> None:
        self._lines = lines
        self._ends_at = ends_at

    def __aiter__(self) -> SseData:
        return self

    async def __anext__(self) -> str:
        while True:
            async with asyncio.timeout_at(self._ends_at):
                line = await anext(self._lines)  # StopAsyncIteration ends the iteration
            if line.startswith("data:"):
                return line[5:].strip()


@contextlib.contextmanager
def reading_reply(name: str) -> Iterator[None]:
    """Turns what reading a reply body can raise (not JSON, missing fields, wrong types)
    into a PROVIDER_ERROR naming the provider."""
    try:
        yield
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise ProviderError(
            FailureKind.PROVIDER_ERROR, f"{name} sent a malformed reply: {type(error).__name__}: {error}"
        ) from None


def json_object(data: str, what: str) -> dict[str, Any]:
    """A stream payload parsed as a JSON object; PROVIDER_ERROR "<what> that is not JSON"
    (or "not a JSON object") otherwise."""
    try:
        value = json.loads(data)
    except ValueError:
        raise ProviderError(FailureKind.PROVIDER_ERROR, f"{what} that is not JSON") from None
    if not isinstance(value, dict):
        raise ProviderError(FailureKind.PROVIDER_ERROR, f"{what} that is not a JSON object")
    return value


def completion(
    name: str,
    request: CompletionRequest,
    text: str,
    *,
    model: Any,
    truncated: bool,
    usage: Any,
    read_usage: Callable[[], tuple[int, int]],
) -> Completion:
    """The reply `text` with its tokens: `read_usage()`, (prompt, completion), of the `usage`
    the provider reported, or an estimate when it reported none (None). PROVIDER_ERROR when
    the usage is malformed or negative."""
    if usage is None:
        # Some servers report no usage. Billing still needs numbers, so estimate them with the
        # gateway's own tokenizer, the same one the simulated providers use.
        prompt_tokens, completion_tokens = count_prompt_tokens(request.messages), count_tokens(text)
    else:
        try:
            prompt_tokens, completion_tokens = read_usage()
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ProviderError(FailureKind.PROVIDER_ERROR, f"{name} sent malformed usage: {clip(usage)}") from None
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ProviderError(FailureKind.PROVIDER_ERROR, f"{name} sent negative token counts")
    return Completion(
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model=str(model),
        truncated=truncated,
    )


def transport_failure(name: str, error: httpx.HTTPError) -> ProviderError:
    if isinstance(error, httpx.TransportError):
        detail = f"{type(error).__name__}: {error}".rstrip(": ")
        return ProviderError(FailureKind.UNAVAILABLE, f"{name} unreachable: {detail}")
    return ProviderError(FailureKind.PROVIDER_ERROR, f"{name} HTTP error: {type(error).__name__}: {error}")


def status_failure(
    message: str, status: int, headers: Mapping[str, str], authentication: Collection[int] = (401, 403)
) -> ProviderError:
    """A non-2xx reply's failure, of the kind its status means (see the module docstring)."""
    if status == 429:
        return ProviderError(FailureKind.RATE_LIMITED, message, retry_after=parse_retry_after(headers))
    if status in (408, 409) or status >= 500:
        return ProviderError(FailureKind.UNAVAILABLE, message, retry_after=parse_retry_after(headers))
    if status in authentication:
        return ProviderError(FailureKind.AUTHENTICATION, message)
    if 400 <= status < 500:
        return ProviderError(FailureKind.BAD_REQUEST, message)
    return ProviderError(FailureKind.PROVIDER_ERROR, message)


def error_detail(content: bytes, describe: Callable[[Any], str]) -> str:
    """`describe` of the `error` member of a JSON error body, else the start of whatever
    the body was (also when `describe` finds a field missing or of the wrong type)."""
    try:
        return describe(json.loads(content)["error"])
    except (ValueError, KeyError, TypeError):
        return clip(content.decode("utf-8", "replace").strip())


def clip(value: Any) -> str:
    """Upstream text (or JSON) cut to MAX_ERROR_CHARS, for error messages."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI's extension) or `Retry-After`
    (delta-seconds or an HTTP date, RFC 9110 §10.2.3); None when absent or unreadable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        seconds = _finite(raw_ms)
        if seconds is not None:
            return max(0.0, seconds / 1000.0)
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    seconds = _finite(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _finite(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
