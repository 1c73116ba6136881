import base64

import pytest

from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.pagination import PageTokenCodec, Paginator, clamp_page_size

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


paginator = Paginator(codec, default_size=3, max_size=5)


def test_paginator_applies_one_policy():
    assert paginator.request("q", 0, "").limit == 3
    assert paginator.request("q", 4, "").limit == 4
    assert paginator.request("q", 10_000, "").limit == 5  # clamped, not refused (AIP-158)
    with pytest.raises(InvalidArgument) as caught:
        paginator.request("q", -1, "")
    assert caught.value.reason == "INVALID_PAGE_SIZE"


def test_paginator_walks_pages_and_stops():
    items = [f"id{i}" for i in range(7)]
    seen, token = [], ""
    while True:
        request = paginator.request("q", 3, token)
        start = 0 if request.after is None else items.index(request.after) + 1
        page = paginator.page(request, items[start : start + request.fetch], key=lambda item: item)
        seen += page.items
        token = page.next_page_token
        if not token:
            break
    assert seen == items


@pytest.mark.parametrize("token", ["é.x", "\x00", "a" * 5000, "bm90IGpzb24.AAAA", "..", "\udcff"])
def test_undecodable_tokens_are_invalid_argument(token):
    with pytest.raises(InvalidArgument) as caught:
        codec.decode(token, "agents")
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_token_whose_body_is_not_ours_is_refused_even_with_a_valid_mac():
    body = b"[1, 2]"  # valid JSON, MAC'd with our key, but not a token payload
    token = base64.urlsafe_b64encode(body).rstrip(b"=").decode() + "." + codec._mac(body)
    with pytest.raises(InvalidArgument):
        codec.decode(token, "agents")


def _walk(paginator, items, page_size):
    """Every page of `items` (strings, each keyed by its first four characters), as lists."""
    pages, token = [], ""
    while True:
        request = paginator.request("q", page_size, token)
        keys = [item[:4] for item in items]
        start = 0 if request.after is None else keys.index(request.after) + 1
        page = paginator.page(request, items[start : start + request.fetch], key=lambda item: item[:4])
        pages.append(page.items)
        token = page.next_page_token
        if not token:
            return pages


def test_a_page_of_long_items_stops_at_the_byte_budget_and_continues():
    by_bytes = Paginator(codec, default_size=100, max_size=1000, byte_budget=10_000)
    items = [f"{i:04d}" + "x" * 3000 for i in range(10)]
    pages = _walk(by_bytes, items, 100)
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert [item for page in pages for item in page] == items  # nothing lost, nothing twice
    # Bytes, not characters: three-byte characters fill the budget three times as fast.
    wide = [f"{i:04d}" + "語" * 1000 for i in range(4)]
    assert [len(p) for p in _walk(by_bytes, wide, 100)] == [3, 1]


def test_an_item_larger_than_the_budget_still_makes_a_page():
    by_bytes = Paginator(codec, default_size=100, max_size=1000, byte_budget=100)
    items = [f"{i:04d}" + "x" * 500 for i in range(3)]
    assert _walk(by_bytes, items, 100) == [[item] for item in items]


def test_short_items_are_paged_by_count_only():
    items = [f"id{i:02d}" for i in range(7)]
    assert [len(p) for p in _walk(Paginator(codec), items, 3)] == [3, 3, 1]


def test_sizes_walk_dataclasses_and_collections():
    from dataclasses import dataclass

    from vocalbridge_common.pagination import approximate_bytes

    @dataclass
    class Message:
        id: str
        content: str
        metadata: dict
        parts: tuple

    small = approximate_bytes(Message("m1", "hi", {}, ()))
    big = approximate_bytes(Message("m1", "hi" * 10_000, {"k": "v" * 1000}, (b"x" * 500,)))
    assert big - small >= 21_000
