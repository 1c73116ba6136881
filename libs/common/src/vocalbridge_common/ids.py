"""Resource ids: a type prefix and 26 characters that sort by creation time
(48-bit millisecond clock + 80 random bits, Crockford base32, as ULIDs do),
so keyset pagination by id is pagination by creation order."""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_PATTERN = re.compile(r"^[a-z]{3}_[0-9a-hjkmnp-tv-z]{26}$")


# Every 10-bit value as its two base32 characters: 13 lookups make an id's 26 characters.
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{''.join(_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10))}"


def parse_resource_name(name: str, collection: str, prefix: str) -> str | None:
    """The id in `collection/<prefix>_…`, or None when `name` is not such a name."""
    head, _, resource_id = name.partition("/")
    if head != collection or not resource_id.startswith(prefix + "_") or not ID_PATTERN.match(resource_id):
        return None
    return resource_id


def parse_name(name: str, collection: str, id_pattern: re.Pattern[str]) -> str | None:
    """The id in `collection/<id>` when it matches `id_pattern`, or None.

    For names whose ids follow a rule other than the gateway's own (`parse_resource_name`):
    ids a producer chooses (a usage event's id), or another service's ids that a service
    records without interpreting them.
    """
    head, _, resource_id = name.partition("/")
    if head != collection or not id_pattern.match(resource_id):
        return None
    return resource_id
