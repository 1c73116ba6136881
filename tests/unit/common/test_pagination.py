import pytest

from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.pagination import PageTokenCodec, clamp_page_size

codec = PageTokenCodec(b"k" * 32)


def test_round_trip():
    token = codec.encode("agents", "agt_123")
    assert codec.decode(token, "agents") == "agt_123"
    assert codec.decode("", "agents") is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "x",
        lambda t: "A" + t[1:],
        lambda t: t.split(".")[0],
        lambda t: "not a token",
    ],
)
def test_tampered_tokens_are_refused(mangle):
    token = codec.encode("agents", "agt_123")
    with pytest.raises(InvalidArgument) as caught:
        codec.decode(mangle(token), "agents")
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_token_of_another_query_or_secret_is_refused():
    token = codec.encode("agents", "agt_123")
    with pytest.raises(InvalidArgument):
        codec.decode(token, "versions:agt_9")
    with pytest.raises(InvalidArgument):
        PageTokenCodec(b"j" * 32).decode(token, "agents")


def test_page_size_clamping():
    assert clamp_page_size(0) == 50
    assert clamp_page_size(7) == 7
    assert clamp_page_size(5000) == 1000
    with pytest.raises(InvalidArgument) as caught:
        clamp_page_size(-1)
    assert caught.value.field_violations[0].field == "page_size"
