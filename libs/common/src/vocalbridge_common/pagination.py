"""One pagination policy for every List RPC (AIP-158), and opaque page tokens.

- `page_size` 0 means the default; above the maximum it is clamped to the maximum;
  negative is refused with INVALID_ARGUMENT.
- A token carries the last key of the previous page and the query it belongs to,
  MAC'd so a client can neither forge a position nor reuse a token with another
  query (another filter, another tenant). A token that fails to decode, for any
  reason, is INVALID_ARGUMENT.

A service asks the `Paginator` for a `PageRequest`, fetches `request.fetch` rows
(one more than the page, to know whether another page follows) and turns them into
a `Page[T]` with `paginator.page(request, rows, key)`.

A page is limited by bytes as well as by count: a page of long items (messages of
32,000 characters, say) stops at PAGE_BYTE_BUDGET and carries the next page's token,
so no page grows past the gRPC message limit or the edge's JSON response limit (a
JSON string can take up to six bytes per character of text). A page always holds at
least one item.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from vocalbridge_common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# A token is a few dozen bytes; anything far longer did not come from us.
MAX_TOKEN_CHARS = 2048
# The bytes of text and data a page may carry (see the module's docstring): with JSON's
# worst case of six bytes per character, under the edge's 8 MiB response limit.
PAGE_BYTE_BUDGET = 1024 * 1024
# What a number, a time or a flag counts for.
_SCALAR_BYTES = 8

T = TypeVar("T")
# What a token remembers of the last item: an id, a number, or a tuple of them.
PageKey = str | int | list[str | int]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, and the token of the next one ("" on the last page)."""

    items: list[T]
    next_page_token: str = ""


@dataclass(frozen=True)
class PageRequest:
    """A validated list request: how many items, and after which key (None: from the start)."""

    query: str
    limit: int
    after: PageKey | None

    @property
    def fetch(self) -> int:
        """Rows to read: one more than the page, to tell whether a next page exists."""
        return self.limit + 1

    # A token's MAC means its key has the type its list encoded; these give a repository
    # that type, and refuse anything else as a bad token rather than pass it to SQL.

    def after_str(self) -> str | None:
        """`after` of a list ordered by a string key (an id)."""
        if self.after is None or isinstance(self.after, str):
            return self.after
        raise _invalid_token()

    def after_int(self) -> int | None:
        """`after` of a list ordered by an integer key (a version number)."""
        if self.after is None or (isinstance(self.after, int) and not isinstance(self.after, bool)):
            return self.after
        raise _invalid_token()

    def after_strs(self, length: int) -> list[str] | None:
        """`after` of a list ordered by `length` string keys (a time and an id, say)."""
        after = self.after
        if after is None:
            return None
        if isinstance(after, list) and len(after) == length and all(isinstance(part, str) for part in after):
            return [str(part) for part in after]
        raise _invalid_token()


def clamp_page_size(page_size: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    if page_size < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            reason="INVALID_PAGE_SIZE",
            field_violations=[FieldViolation("page_size", f"must be between 0 and {maximum}")],
        )
    if page_size == 0:
        return default
    return min(page_size, maximum)


def _invalid_token() -> InvalidArgument:
    return InvalidArgument(
        "page_token is not valid for this request",
        reason="INVALID_PAGE_TOKEN",
        field_violations=[FieldViolation("page_token", "not a token returned for this query")],
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PageTokenCodec:
    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"vocalbridge page tokens", hashlib.sha256).digest()

    def _mac(self, body: bytes) -> str:
        return _b64(hmac.new(self._key, body, hashlib.sha256).digest()[:16])

    def encode(self, query: str, last_key: PageKey) -> str:
        body = json.dumps({"q": query, "k": last_key}, separators=(",", ":")).encode()
        return _b64(body) + "." + self._mac(body)

    def decode(self, token: str, query: str) -> PageKey | None:
        """The last key stored in `token`; None for an empty token (the first page)."""
        if not token:
            return None
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise _invalid_token()
        try:
            encoded, mac = token.split(".", 1)
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (ValueError, binascii.Error):
            raise _invalid_token() from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise _invalid_token()
        try:
            payload = json.loads(body)
        except ValueError:
            raise _invalid_token() from None
        if not isinstance(payload, dict) or payload.get("q") != query or "k" not in payload:
            raise _invalid_token()
        key: PageKey = payload["k"]
        return key


def approximate_bytes(item: object) -> int:
    """About how many bytes `item` takes in a response: its text (UTF-8) and data, walked
    through dataclasses, sequences and mappings; every other value a few bytes."""
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogatepass"))
    if isinstance(item, bytes | bytearray | memoryview):
        return len(item)
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return sum(approximate_bytes(getattr(item, f.name)) for f in dataclasses.fields(item)) + _SCALAR_BYTES
    if isinstance(item, Mapping):
        return sum(approximate_bytes(k) + approximate_bytes(v) for k, v in item.items()) + _SCALAR_BYTES
    if isinstance(item, list | tuple | set | frozenset):
        return sum(approximate_bytes(part) for part in item) + _SCALAR_BYTES
    return _SCALAR_BYTES


class Paginator:
    """The pagination policy, shared by every List RPC of a service."""

    def __init__(
        self,
        codec: PageTokenCodec,
        *,
        default_size: int = DEFAULT_PAGE_SIZE,
        max_size: int = MAX_PAGE_SIZE,
        byte_budget: int = PAGE_BYTE_BUDGET,
    ) -> None:
        self._codec = codec
        self._default = default_size
        self._max = max_size
        self._byte_budget = byte_budget

    def request(self, query: str, page_size: int, page_token: str) -> PageRequest:
        """Validates the size and the token of a list call. `query` names the list and every
        filter that shapes it (and the tenant), so a token fits only the query that made it."""
        limit = clamp_page_size(page_size, self._default, self._max)
        return PageRequest(query=query, limit=limit, after=self._codec.decode(page_token, query))

    def page(
        self,
        request: PageRequest,
        rows: Sequence[T],
        key: Callable[[T], PageKey],
        size: Callable[[T], int] = approximate_bytes,
    ) -> Page[T]:
        """The page for `rows` (read with `request.fetch`); `key` gives an item's position, `size`
        its bytes in the response. The page ends at the count or at the byte budget, whichever
        comes first; a next page token follows whenever rows were left out."""
        items: list[T] = []
        used = 0
        for row in rows[: request.limit]:
            used += size(row)
            if items and used > self._byte_budget:
                break
            items.append(row)
        if len(items) < len(rows):
            return Page(items, self._codec.encode(request.query, key(items[-1])))
        return Page(items)
