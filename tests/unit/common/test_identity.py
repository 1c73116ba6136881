import pytest

from vocalbridge_common.identity import IdentitySigner, InvalidIdentity

SECRET = b"s" * 32


def test_round_trip_keeps_every_claim():
    signer = IdentitySigner(SECRET, ttl_seconds=60)
    token = signer.mint("ten_a", "key_1", {"read", "write"}, now=1000)
    identity = signer.verify(token, now=1030)
    assert (identity.tenant_id, identity.key_id, identity.scopes, identity.expires_at) == (
        "ten_a",
        "key_1",
        frozenset({"read", "write"}),
        1060,
    )


def test_expired_token_is_refused():
    signer = IdentitySigner(SECRET, ttl_seconds=60)
    token = signer.mint("ten_a", "key_1", {"read"}, now=1000)
    with pytest.raises(InvalidIdentity, match="expired"):
        signer.verify(token, now=1060)


def test_other_secret_or_tampered_claims_are_refused():
    token = IdentitySigner(SECRET).mint("ten_a", "key_1", {"read"})
    with pytest.raises(InvalidIdentity, match="signature"):
        IdentitySigner(b"t" * 32).verify(token)
    version, _claims, mac = token.split(".")
    # Swap in the claims of another tenant, keeping the original signature.
    other = IdentitySigner(b"u" * 32).mint("ten_b", "key_1", {"admin"}).split(".")[1]
    with pytest.raises(InvalidIdentity):
        IdentitySigner(SECRET).verify(f"{version}.{other}.{mac}")


@pytest.mark.parametrize("token", [None, "", "v1.abc", "v2.a.b", "v1.!!.??", "garbage"])
def test_malformed_tokens_are_refused(token):
    with pytest.raises(InvalidIdentity):
        IdentitySigner(SECRET).verify(token)


def test_short_secret_is_rejected():
    with pytest.raises(ValueError):
        IdentitySigner(b"short")
