"""A presented API key is compared with the stored digest in constant time: every comparison
on the authentication path goes through hmac.compare_digest (a spy records each one), for the
operator's key and a tenant's, right or wrong, and no digest is compared with `==`."""

from __future__ import annotations

import ast
import hmac
import inspect
from datetime import UTC, datetime

import pytest

import vocalbridge_auth.check as check_module
import vocalbridge_auth.domain as domain_module
from vocalbridge_auth.check import KeyAuthenticator
from vocalbridge_auth.domain import digest, issue_key
from vocalbridge_common.errors import Unauthenticated
from vocalbridge_common.ids import new_id

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
OPERATOR_SECRET = "operator-secret-for-unit-tests-0123"


class Keys:
    def __init__(self, key) -> None:
        self.key = key

    async def find_key(self, prefix: str):
        return self.key if prefix == self.key.prefix else None


@pytest.fixture
def comparisons(monkeypatch):
    """Every hmac.compare_digest call the auth modules make, as (a, b)."""
    seen: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    for module in (check_module, domain_module):
        assert module.hmac is hmac, f"{module.__name__} no longer compares with the hmac module"
        monkeypatch.setattr(module.hmac, "compare_digest", spy)
    return seen


@pytest.fixture
def issued():
    return issue_key(
        key_id=new_id("key"),
        tenant_id=new_id("ten"),
        display_name="spy",
        scope_names=["read"],
        create_time=NOW,
        expire_time=None,
        public_id=b"\x01\x02\x03\x04",
        private=b"k" * 32,
    )


async def test_a_tenant_key_is_compared_by_digest_in_constant_time(comparisons, issued):
    authenticator = KeyAuthenticator(Keys(issued.key), digest(OPERATOR_SECRET), 5.0, clock=lambda: NOW)
    principal = await authenticator.authenticate(issued.secret)
    assert principal.key_id == issued.key.id
    assert (digest(issued.secret), issued.key.digest) in comparisons


async def test_a_wrong_secret_with_a_real_prefix_is_compared_in_constant_time(comparisons, issued):
    authenticator = KeyAuthenticator(Keys(issued.key), digest(OPERATOR_SECRET), 5.0, clock=lambda: NOW)
    forged = issued.key.prefix + "_" + "A" * 43
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(forged)
    assert (digest(forged), issued.key.digest) in comparisons


async def test_the_operator_key_is_compared_in_constant_time(comparisons, issued):
    authenticator = KeyAuthenticator(Keys(issued.key), digest(OPERATOR_SECRET), 5.0, clock=lambda: NOW)
    await authenticator.authenticate(OPERATOR_SECRET)
    assert (digest(OPERATOR_SECRET), digest(OPERATOR_SECRET)) in comparisons


def _equality_on_digests(source: str) -> list[str]:
    """`==`/`!=` comparisons with an operand that holds a digest or a secret (a name that mentions
    one; a header's name, such as EDGE_SECRET_HEADER, is not a secret)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            operands = (node.left, *node.comparators)
            if any(isinstance(part, ast.Constant) for part in operands):
                continue  # a format check against a literal (the `_` after a prefix), not a match
            names = [ast.unparse(part) for part in operands]
            if any(
                ("digest" in name.lower() or "secret" in name.lower()) and "header" not in name.lower()
                for name in names
            ):
                found.append(ast.unparse(node))
    return found


def test_no_digest_or_secret_is_compared_with_equality():
    for module in (check_module, domain_module):
        assert _equality_on_digests(inspect.getsource(module)) == [], module.__name__


def test_the_equality_check_catches_a_planted_comparison():
    assert _equality_on_digests("ok = presented_digest == key.digest") == ["presented_digest == key.digest"]
