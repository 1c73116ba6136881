"""The price list: seeded rows, ListPrices paging and filtering, and a price
change that takes effect mid-run without touching earlier events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest

from tests.conftest import TEST_IDENTITY_SECRET
from tests.integration.billing.billing_testkit import expect_failure, usage_event
from vocalbridge.billing.v1 import billing_service_pb2 as pb
from vocalbridge.billing.v1 import price_pb2
from vocalbridge_billing.server import SCHEMA
from vocalbridge_billing.service.prices import PriceService
from vocalbridge_common.db import Database
from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.pagination import PageTokenCodec, Paginator
from vocalbridge_common.pricing import SEED_PRICES, PriceRow, PriceUnit

PROMPT = price_pb2.PRICE_UNIT_PER_1K_PROMPT_TOKENS
COMPLETION = price_pb2.PRICE_UNIT_PER_1K_COMPLETION_TOKENS


@pytest.fixture(scope="module")
async def operator_service(billing_database):
    """The service layer over the same database, for the operator action with no RPC: adding a price."""
    db = Database(billing_database, SCHEMA)
    yield PriceService(db, Paginator(PageTokenCodec(TEST_IDENTITY_SECRET)))
    await db.dispose()


def as_row(price: price_pb2.Price) -> PriceRow:
    return PriceRow(
        price.name.removeprefix("prices/"),
        price.provider,
        price.model,
        PriceUnit(price_pb2.PriceUnit.Name(price.unit).removeprefix("PRICE_UNIT_")),
        price.micros_per_unit,
        price.effective_time.ToDatetime(tzinfo=UTC),
    )


async def all_prices(stub, md, **filters) -> list[price_pb2.Price]:
    prices, token = [], ""
    while True:
        page = await stub.ListPrices(pb.ListPricesRequest(page_size=2, page_token=token, **filters), metadata=md)
        prices.extend(page.prices)
        token = page.next_page_token
        if not token:
            return prices


async def test_seed_prices_are_listed_to_any_reader(stub, md, as_tenant):
    prices = await all_prices(stub, md, provider="vendorB")
    assert [(p.name, p.unit, p.micros_per_unit, p.model) for p in prices] == [
        ("prices/prc_00000000000000000000000004", COMPLETION, 3000, ""),
        ("prices/prc_00000000000000000000000003", PROMPT, 3000, ""),
    ]
    listed = await all_prices(stub, md)
    assert {p.name.removeprefix("prices/") for p in listed} >= {row.price_id for row in SEED_PRICES}
    order = [(p.provider, p.model, price_pb2.PriceUnit.Name(p.unit), p.effective_time.ToDatetime()) for p in listed]
    assert order == sorted(order)
    # A service identity without a tenant may list prices too (the read scope is what counts).
    service = as_tenant("", ("internal", "read"), key_id="svc_conversation")
    assert len((await stub.ListPrices(pb.ListPricesRequest(page_size=1000), metadata=service)).prices) == len(listed)
    await expect_failure(
        stub.ListPrices(pb.ListPricesRequest(), metadata=as_tenant("", ("internal",))),
        grpc.StatusCode.PERMISSION_DENIED,
        "SCOPE_INSUFFICIENT",
    )


async def test_a_price_change_mid_run_leaves_earlier_events_at_the_old_price(stub, relay, tenant, md, operator_service):
    now = datetime.now(UTC)
    change = now + timedelta(seconds=60)
    new_prompt = await operator_service.add_price("vendorA", "", PriceUnit.PER_1K_PROMPT_TOKENS, 5000, change)
    new_completion = await operator_service.add_price("vendorA", "", PriceUnit.PER_1K_COMPLETION_TOKENS, 5000, change)
    # The producer prices with the rows ListPrices returns (future rows included).
    listed = [as_row(p) for p in await all_prices(stub, md)]
    assert new_prompt in listed and new_completion in listed
    before = usage_event(tenant, event_time=now - timedelta(seconds=5), price_rows=listed)
    just_before = usage_event(tenant, event_time=change - timedelta(microseconds=1), price_rows=listed)
    after = usage_event(tenant, event_time=change + timedelta(seconds=60), price_rows=listed)
    assert (before.cost_micros, after.cost_micros) == (84, 210)  # (12 + 30) × 2000 or 5000 / 1000

    await stub.RecordUsage(pb.RecordUsageRequest(events=[after, before, just_before]), metadata=relay)

    page = await stub.ListUsageEvents(pb.ListUsageEventsRequest(), metadata=md)
    costs = {e.name: (e.cost_micros, sorted(p.name for p in e.prices)) for e in page.usage_events}
    old = sorted(["prices/prc_00000000000000000000000001", "prices/prc_00000000000000000000000002"])
    assert costs[before.name] == (84, old)
    assert costs[just_before.name] == (84, old)
    assert costs[after.name] == (210, sorted([f"prices/{new_prompt.price_id}", f"prices/{new_completion.price_id}"]))
    summary = await stub.GetUsageSummary(pb.GetUsageSummaryRequest(end_time=after.event_time), metadata=md)
    assert summary.totals.cost_micros == 168


async def test_a_price_cannot_take_effect_in_the_past(operator_service):
    with pytest.raises(InvalidArgument) as caught:
        await operator_service.add_price(
            "vendorB", "", PriceUnit.PER_1K_PROMPT_TOKENS, 1, datetime.now(UTC) - timedelta(minutes=1)
        )
    assert [v.field for v in caught.value.field_violations] == ["effective_time"]
