"""Opaque, tamper-evident page tokens and page-size clamping (AIP-158).

A token carries the last key of the previous page and a fingerprint of the
query it belongs to, MAC'd so a client can neither forge a position nor reuse
a token with a different query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from vocalbridge_common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


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


class PageTokenCodec:
    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"vocalbridge page tokens", hashlib.sha256).digest()

    def _mac(self, body: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()[:16]).rstrip(b"=").decode()

    def encode(self, query: str, last_key: list | str) -> str:
        body = json.dumps({"q": query, "k": last_key}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(body).rstrip(b"=").decode() + "." + self._mac(body)

    def decode(self, token: str, query: str):
        """The last key stored in `token`; None for an empty token (the first page)."""
        if not token:
            return None
        invalid = InvalidArgument(
            "page_token is not valid for this request",
            reason="INVALID_PAGE_TOKEN",
            field_violations=[FieldViolation("page_token", "not a token returned for this query")],
        )
        try:
            encoded, mac = token.split(".", 1)
            body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise invalid from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise invalid
        payload = json.loads(body)
        if payload.get("q") != query:
            raise invalid
        return payload["k"]
