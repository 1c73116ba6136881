"""Billing service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass

from vocalbridge_common.config import CommonSettings, ConfigError, Env
from vocalbridge_common.topology import default_port

SERVICE = "billing"


@dataclass(frozen=True)
class BillingSettings:
    common: CommonSettings
    # How far in the future an event time may be (the producers' clocks drift);
    # later events are refused as invalid.
    max_clock_skew_seconds: float

    @classmethod
    def from_env(cls, env: Env | None = None) -> BillingSettings:
        env = env or Env()
        skew = env.float("VB_BILLING_MAX_CLOCK_SKEW_SECONDS", 300.0)
        if skew < 0:
            raise ConfigError("VB_BILLING_MAX_CLOCK_SKEW_SECONDS must not be negative")
        return cls(common=CommonSettings.from_env(SERVICE, default_port(SERVICE), env), max_clock_skew_seconds=skew)
