"""The price list: listing it (ListPrices) and adding a row (an operator action with
no RPC in the contract yet). The list is the same for every tenant, so it is read
and written in system transactions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from vocalbridge_billing.domain import (
    PRICE_ID_PREFIX,
    check_page_size,
    new_price_violations,
    price_cursor,
    price_filter_violations,
    price_list_query,
    price_page_key,
)
from vocalbridge_billing.repository import PriceRepository
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import invalid_fields
from vocalbridge_common.ids import new_id
from vocalbridge_common.pagination import Page, Paginator
from vocalbridge_common.pricing import PriceRow, PriceUnit
from vocalbridge_common.validation import Violations


class PriceService:
    def __init__(self, db: Database, paginator: Paginator, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._paginator = paginator
        self._clock = clock

    async def list_prices(self, provider: str, page_size: int, page_token: str) -> Page[PriceRow]:
        violations = Violations()
        check_page_size(page_size, violations)
        price_filter_violations(provider, violations)
        if violations:
            raise invalid_fields(violations)
        request = self._paginator.request(price_list_query(provider), page_size, page_token)
        async with self._db.system_transaction() as session:
            prices = await PriceRepository(session).page(provider, price_cursor(request), request.fetch)
        return self._paginator.page(request, prices, key=price_page_key)

    async def add_price(
        self, provider: str, model: str, unit: PriceUnit | str, micros_per_unit: int, effective_time: datetime
    ) -> PriceRow:
        """Adds a price row. A row in effect is never changed, so a new row may not take
        effect in the past."""
        now = self._clock()
        violations = new_price_violations(provider, model, unit, micros_per_unit, effective_time, now)
        if violations:
            raise invalid_fields(violations)
        price = PriceRow(
            price_id=new_id(PRICE_ID_PREFIX),
            provider=provider,
            model=model,
            unit=PriceUnit(unit),
            micros_per_unit=micros_per_unit,
            effective_time=effective_time.astimezone(UTC),
        )
        async with self._db.system_transaction() as session:
            await PriceRepository(session).add(price, create_time=now)
        return price
