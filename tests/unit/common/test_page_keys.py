"""A page request hands a repository its key in the type the list encoded, and refuses any other type."""

import pytest

from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.pagination import PageRequest, PageTokenCodec, Paginator

paginator = Paginator(PageTokenCodec(b"k" * 32))


def request_after(key: str | int | list[str | int]) -> PageRequest:
    first = paginator.request("q", 1, "")
    token = paginator.page(first, [key, key], key=lambda item: item).next_page_token
    return paginator.request("q", 1, token)


def test_typed_keys_come_back_with_their_type():
    assert request_after("agt_1").after_str() == "agt_1"
    assert request_after(7).after_int() == 7
    start = paginator.request("q", 1, "")
    assert start.after_str() is None and start.after_int() is None


@pytest.mark.parametrize(
    "request_, read",
    [
        (request_after(7), PageRequest.after_str),
        (request_after(["a", 1]), PageRequest.after_str),
        (request_after("7"), PageRequest.after_int),
        (PageRequest("q", 1, True), PageRequest.after_int),
    ],
)
def test_a_key_of_another_type_is_a_bad_token(request_, read):
    with pytest.raises(InvalidArgument) as caught:
        read(request_)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
