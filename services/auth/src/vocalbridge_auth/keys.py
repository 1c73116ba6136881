"""API-key secrets: `vb_<8 hex public id>_<43 url-safe random chars>`.

The public prefix (`vb_` + 8 hex) finds the row; the SHA-256 digest of the
whole secret proves possession. 256 bits of randomness make a slow hash
unnecessary, and the secret itself is never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_PREFIX_LENGTH = 11  # "vb_" + 8 hex characters


def generate_secret() -> tuple[str, str]:
    """A new (secret, public prefix) pair."""
    prefix = f"vb_{secrets.token_hex(4)}"
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def prefix_of(secret: str) -> str | None:
    """The public prefix of a well-formed secret, or None."""
    if len(secret) < _PREFIX_LENGTH + 2 or not secret.startswith("vb_") or secret[_PREFIX_LENGTH] != "_":
        return None
    return secret[:_PREFIX_LENGTH]


def matches(secret: str, expected_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), expected_digest)
