"""The price book a turn reads is refreshed in the background: seed rows until billing
first answers, billing's rows after that, the last good rows through an outage, and a
schedule that never involves a turn."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest

from tests.unit.conversation.fakes import FakeTime
from vocalbridge_common.pricing import SEED_PRICES, PriceRow
from vocalbridge_conversation.price_book import PriceBook, PriceRefresher

REFRESH = 30.0
RAISED = replace(SEED_PRICES[0], price_id="prc_raised", micros_per_unit=2500)


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


class ScriptedBilling:
    """Answers ListPrices with the next step of its script: rows, or an exception."""

    def __init__(self, *script: list[PriceRow] | Exception) -> None:
        self.script = list(script)
        self.calls = 0

    async def fetch(self) -> list[PriceRow]:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(step, Exception):
            raise step
        return step


class Stop(Exception):
    """Ends run_forever after a number of sleeps."""


def stopping_after(time: FakeTime, sleeps: int):
    async def sleep(seconds: float) -> None:
        await time.sleep(seconds)
        if len(time.slept) >= sleeps:
            raise Stop

    return sleep


async def test_seed_rows_until_billing_first_answers():
    book = PriceBook()
    refresher = PriceRefresher(book, ScriptedBilling(unavailable(), [RAISED]), REFRESH)
    assert book.rows() == SEED_PRICES
    assert await refresher.refresh_once() is False
    assert book.rows() == SEED_PRICES
    assert await refresher.refresh_once() is True
    assert book.rows() == (RAISED,)


async def test_an_outage_or_an_empty_answer_keeps_the_last_rows_billing_gave():
    book = PriceBook()
    refresher = PriceRefresher(book, ScriptedBilling([RAISED], unavailable(), []), REFRESH)
    await refresher.refresh_once()
    assert await refresher.refresh_once() is False
    assert book.rows() == (RAISED,)
    assert await refresher.refresh_once() is True
    assert book.rows() == (RAISED,)


async def test_refreshes_on_schedule_and_twice_as_often_while_billing_is_down():
    time = FakeTime()
    book = PriceBook()
    billing = ScriptedBilling(unavailable(), unavailable(), [RAISED])
    refresher = PriceRefresher(book, billing, REFRESH, sleep=stopping_after(time, 4))
    with pytest.raises(Stop):
        await refresher.run_forever()
    assert billing.calls == 4  # at start-up, then once after every sleep
    assert time.slept == [REFRESH / 2, REFRESH / 2, REFRESH, REFRESH]
    assert book.rows() == (RAISED,)


async def test_an_unexpected_error_does_not_end_the_refresh(caplog):
    time = FakeTime()
    book = PriceBook()
    billing = ScriptedBilling(ValueError("a price billing sent is malformed"), [RAISED])
    refresher = PriceRefresher(book, billing, REFRESH, sleep=stopping_after(time, 2))
    with pytest.raises(Stop):
        await refresher.run_forever()
    assert billing.calls == 2 and book.rows() == (RAISED,)
    assert time.slept == [REFRESH / 2, REFRESH]
    assert any(record.getMessage() == "price refresh failed" for record in caplog.records)
