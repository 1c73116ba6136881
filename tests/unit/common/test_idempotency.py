"""Claiming an idempotency key, with a fake wall clock and an in-memory store that has
the repository's semantics: the first request runs, a repeat replays, a different
request is refused, a running one is "in use" until its lease ends and is then taken
over, a key past its TTL runs again, and a released key is free."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.unit.common.idempotency_fakes import FakeClock, FakeIdempotencyStore
from vocalbridge_common.errors import Aborted, AlreadyExists, DomainError, InvalidArgument
from vocalbridge_common.idempotency import (
    Claimed,
    IdempotencyRecord,
    KeyState,
    Replay,
    claim,
    fingerprint,
    required_key,
    validate_key,
)

LEASE = timedelta(minutes=2)
TTL = timedelta(hours=24)
SECOND = timedelta(seconds=1)
KEY = "order-42"
HELLO = fingerprint("SendMessage", session="ses_1", content="Hello", voice=None)
GOODBYE = fingerprint("SendMessage", session="ses_1", content="Goodbye", voice=None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> FakeIdempotencyStore:
    return FakeIdempotencyStore()


@pytest.fixture
def attempt(store, clock):
    """attempt(request_fingerprint) → what a request with KEY gets now."""

    async def run(request_fingerprint: str = HELLO) -> Claimed | Replay:
        return await claim(store, KEY, request_fingerprint, clock(), LEASE, TTL)

    return run


async def refused(attempt, request_fingerprint: str = HELLO) -> DomainError:
    with pytest.raises(DomainError) as caught:
        await attempt(request_fingerprint)
    return caught.value


async def test_the_first_request_claims_the_key_for_its_lease_and_ttl(attempt, store, clock):
    claimed = await attempt()
    assert isinstance(claimed, Claimed)
    record = store.records[KEY]
    assert (record.id, record.fingerprint, record.state, record.response) == (
        claimed.record_id,
        HELLO,
        KeyState.IN_PROGRESS,
        None,
    )
    assert record.lease_expire_time == clock() + LEASE and record.expire_time == clock() + TTL


async def test_the_same_request_after_completion_replays_the_stored_response(attempt, store, clock):
    first = await attempt()
    await store.complete(first.record_id, b"the stored response")
    clock.advance(timedelta(hours=23))
    assert await attempt() == Replay(b"the stored response")


async def test_the_same_key_with_another_request_is_refused(attempt, store):
    first = await attempt()
    # While the first runs: "another request" wins over "in use", the client must change its key.
    error = await refused(attempt, GOODBYE)
    assert isinstance(error, AlreadyExists) and error.reason == "IDEMPOTENCY_KEY_REUSED"
    await store.complete(first.record_id, b"hello's response")
    error = await refused(attempt, GOODBYE)
    assert isinstance(error, AlreadyExists) and error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert error.metadata == {"idempotencyKey": KEY}
    assert store.records[KEY].response == b"hello's response"  # the refusal changed nothing


async def test_a_repeat_within_the_lease_is_told_the_key_is_in_use(attempt, store, clock):
    first = await attempt()
    clock.advance(LEASE - SECOND)
    error = await refused(attempt)
    assert isinstance(error, Aborted) and error.reason == "IDEMPOTENCY_KEY_IN_USE"
    assert store.records[KEY].id == first.record_id


async def test_a_claim_past_its_lease_is_taken_over_and_lost_by_its_old_holder(attempt, store, clock):
    old = await attempt()
    clock.advance(LEASE)  # the lease has run out: its worker is presumed dead
    new = await attempt()
    assert isinstance(new, Claimed) and new.record_id != old.record_id
    record = store.records[KEY]
    assert record.id == new.record_id and record.lease_expire_time == clock() + LEASE

    # The old holder, still alive after all, can neither complete the key nor free it.
    await store.complete(old.record_id, b"the old holder's response")
    await store.release(old.record_id)
    assert store.records[KEY].state is KeyState.IN_PROGRESS and store.records[KEY].response is None
    error = await refused(attempt)
    assert error.reason == "IDEMPOTENCY_KEY_IN_USE"

    await store.complete(new.record_id, b"the new holder's response")
    assert await attempt() == Replay(b"the new holder's response")


async def test_an_abandoned_claim_is_taken_over_by_another_request_too(attempt, clock):
    await attempt(HELLO)
    clock.advance(LEASE)
    # Nothing was stored for the abandoned request, so the key is not "used" yet.
    assert isinstance(await attempt(GOODBYE), Claimed)


async def test_a_completed_key_is_never_taken_over_within_its_ttl(attempt, store, clock):
    first = await attempt()
    await store.complete(first.record_id, b"done")
    clock.advance(TTL - SECOND)  # long past the lease, which only matters while running
    assert await attempt() == Replay(b"done")


async def test_a_key_past_its_ttl_runs_again_for_any_request(attempt, store, clock):
    first = await attempt()
    await store.complete(first.record_id, b"yesterday's response")
    clock.advance(TTL)
    again = await attempt()
    assert isinstance(again, Claimed) and again.record_id != first.record_id
    assert store.records[KEY].state is KeyState.IN_PROGRESS and store.records[KEY].response is None
    await store.complete(again.record_id, b"today's response")
    clock.advance(TTL)
    assert isinstance(await attempt(GOODBYE), Claimed)  # expired: not "reused"


async def test_losing_the_take_over_race_means_in_use(store, clock):
    class RacedStore(FakeIdempotencyStore):
        async def take_over(self, key: str, old_id: str, record: IdempotencyRecord) -> bool:
            return False  # another request replaced the record between our read and our update

    raced = RacedStore()
    await claim(raced, KEY, HELLO, clock(), LEASE, TTL)
    clock.advance(LEASE)
    with pytest.raises(Aborted) as caught:
        await claim(raced, KEY, HELLO, clock(), LEASE, TTL)
    assert caught.value.reason == "IDEMPOTENCY_KEY_IN_USE"


async def test_release_frees_the_key(attempt, store):
    first = await attempt()
    await store.release(first.record_id)
    assert KEY not in store.records
    again = await attempt(GOODBYE)  # free: any request may use it now
    assert isinstance(again, Claimed) and store.records[KEY].fingerprint == GOODBYE


async def test_a_key_released_between_insert_and_read_is_claimed_again(store, clock):
    class ReleasedMeanwhile(FakeIdempotencyStore):
        async def get(self, key: str) -> IdempotencyRecord | None:
            self.records.pop(key, None)  # the running request failed and freed the key just now
            return None

    releasing = ReleasedMeanwhile()
    await claim(releasing, KEY, HELLO, clock(), LEASE, TTL)
    claimed = await claim(releasing, KEY, GOODBYE, clock(), LEASE, TTL)
    assert isinstance(claimed, Claimed) and releasing.records[KEY].id == claimed.record_id


def test_keys_are_required_printable_and_bounded():
    assert validate_key("k" * 255) == required_key("k" * 255) == "k" * 255
    for bad, reason in ((None, "IDEMPOTENCY_KEY_REQUIRED"), ("", "IDEMPOTENCY_KEY_REQUIRED")):
        with pytest.raises(InvalidArgument) as caught:
            required_key(bad)
        assert caught.value.reason == reason
    for bad in ("k" * 256, "tab\there"):
        with pytest.raises(InvalidArgument) as caught:
            validate_key(bad)
        assert caught.value.reason == "IDEMPOTENCY_KEY_INVALID"
        with pytest.raises(InvalidArgument):
            validate_key(bad, required=False)  # optional, but checked when sent


def test_an_optional_key_may_be_absent():
    assert validate_key(None, required=False) is None
    assert validate_key("", required=False) is None


def test_fingerprints_tell_requests_apart_and_nothing_else():
    assert fingerprint("SendMessage", content="Hi", session="s", voice=None) == fingerprint(
        "SendMessage", session="s", voice=None, content="Hi"
    )
    assert fingerprint("SendMessage", session="s", content="Hi") != fingerprint(
        "StreamMessage", session="s", content="Hi"
    )
    spoken = {"audio_seconds": 1.5, "speech_provider": ""}
    assert fingerprint("SendMessage", session="s", content="Hi", voice=None) != fingerprint(
        "SendMessage", session="s", content="Hi", voice=spoken
    )
