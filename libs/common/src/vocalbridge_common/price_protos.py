"""Price rows ⇄ billing.v1.Price messages: billing serves them (ListPrices, usage
events), the conversation service reads them back and names them in its events."""

from __future__ import annotations

from vocalbridge.billing.v1 import price_pb2
from vocalbridge_common.pricing import PriceRow, PriceUnit
from vocalbridge_common.protoconv import EPOCH, from_timestamp, to_timestamp

_PREFIX = "PRICE_UNIT_"


def price_to_proto(price: PriceRow) -> price_pb2.Price:
    return price_pb2.Price(
        name=f"prices/{price.price_id}",
        provider=price.provider,
        model=price.model,
        unit=_PREFIX + price.unit.value,
        micros_per_unit=price.micros_per_unit,
        effective_time=to_timestamp(price.effective_time),
    )


def price_from_proto(message: price_pb2.Price) -> PriceRow:
    return PriceRow(
        price_id=message.name.removeprefix("prices/"),
        provider=message.provider,
        model=message.model,
        unit=PriceUnit(price_pb2.PriceUnit.Name(message.unit).removeprefix(_PREFIX)),
        micros_per_unit=message.micros_per_unit,
        effective_time=from_timestamp(message, "effective_time") or EPOCH,
    )
