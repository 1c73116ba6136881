"""Limits ⇄ the auth contract's messages, for the auth service and the services that read
a tenant's limits with GetTenantLimits (like price_protos for prices)."""

from __future__ import annotations

from vocalbridge.auth.v1 import auth_service_pb2, budget_pb2, rate_limit_pb2
from vocalbridge_common.limits.model import (
    BudgetConfig,
    BudgetPeriod,
    RateLimitConfig,
    Target,
    TenantLimits,
)

PERIOD_TO_PROTO = {
    BudgetPeriod.CALENDAR_MONTH: budget_pb2.BUDGET_PERIOD_CALENDAR_MONTH,
    BudgetPeriod.FIXED_WINDOW: budget_pb2.BUDGET_PERIOD_FIXED_WINDOW,
}
PROTO_TO_PERIOD = {value: period for period, value in PERIOD_TO_PROTO.items()}


def rate_limit_config_to_proto(config: RateLimitConfig) -> rate_limit_pb2.RateLimit:
    message = rate_limit_pb2.RateLimit(name=f"rateLimits/{config.target.resource_id}", target=config.target.name)
    if config.requests_per_minute is not None:
        message.requests_per_minute = config.requests_per_minute
    if config.tokens_per_minute is not None:
        message.tokens_per_minute = config.tokens_per_minute
    return message


def budget_config_to_proto(config: BudgetConfig) -> budget_pb2.Budget:
    message = budget_pb2.Budget(
        name=f"budgets/{config.target.resource_id}",
        target=config.target.name,
        limit_micros=config.limit_micros,
        period=PERIOD_TO_PROTO[config.period],
    )
    if config.window_seconds:
        message.window_duration.seconds = config.window_seconds
    return message


def tenant_limits_to_proto(limits: TenantLimits) -> auth_service_pb2.TenantLimits:
    return auth_service_pb2.TenantLimits(
        rate_limits=[rate_limit_config_to_proto(r) for r in limits.rate_limits.values()],
        budgets=[budget_config_to_proto(b) for b in limits.budgets.values()],
    )


def _target(name: str) -> Target:
    target = Target.parse(name.partition("/")[2])
    if target is None:
        raise ValueError(f"not the name of a limit: {name!r}")
    return target


def tenant_limits_from_proto(tenant_id: str, message: auth_service_pb2.TenantLimits) -> TenantLimits:
    rates = [
        RateLimitConfig(
            _target(r.name),
            r.requests_per_minute if r.HasField("requests_per_minute") else None,
            r.tokens_per_minute if r.HasField("tokens_per_minute") else None,
        )
        for r in message.rate_limits
    ]
    budgets = [
        BudgetConfig(
            _target(b.name),
            b.limit_micros,
            PROTO_TO_PERIOD.get(b.period, BudgetPeriod.CALENDAR_MONTH),
            b.window_duration.seconds or None,
        )
        for b in message.budgets
    ]
    return TenantLimits.of(tenant_id, rates, budgets)
