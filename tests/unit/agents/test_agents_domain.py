"""The agents domain without I/O: update masks, names, etags, validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocalbridge_agents.domain import (
    LEAF_PATHS,
    AgentConfig,
    ModelParameters,
    VoiceSettings,
    apply_mask,
    etag_for,
    parse_agent_name,
    parse_version_name,
    resolve_update_mask,
    validate_config,
)
from vocalbridge_common.errors import AgentNotFound, InvalidArgument
from vocalbridge_common.ids import new_id

AGENT_ID = new_id("agt")
CURRENT = AgentConfig(
    display_name="Support",
    system_prompt="Be kind.",
    primary_provider="vendorA",
    fallback_provider="vendorB",
    model="m1",
    parameters=ModelParameters(temperature=0.2, top_p=0.9, max_output_tokens=100),
    voice=VoiceSettings(voice="en-us", words_per_minute=160),
)


def fields_of(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.field_violations]


# -- masks ---------------------------------------------------------------------


def test_leaf_group_and_camel_case_paths_resolve_to_leaves():
    assert resolve_update_mask(["displayName", " system_prompt ", "parameters.topP", "voice"]) == {
        "display_name",
        "system_prompt",
        "parameters.top_p",
        "voice.voice",
        "voice.words_per_minute",
    }
    assert resolve_update_mask(["*"]) == LEAF_PATHS


def test_every_bad_path_is_reported_on_update_mask():
    with pytest.raises(InvalidArgument) as caught:
        resolve_update_mask(["name", "etag", "createTime", "version", "nope", "parameters.seed", "voice.voice.x", ""])
    assert fields_of(caught.value) == ["update_mask"] * 8


def test_apply_mask_takes_exactly_the_masked_leaves():
    patch = AgentConfig(display_name="New", model="ignored", parameters=ModelParameters(top_p=0.5))

    result = apply_mask(CURRENT, patch, resolve_update_mask(["display_name", "parameters.temperature"]))

    assert result.display_name == "New"
    assert result.model == "m1"
    assert result.parameters == ModelParameters(temperature=None, top_p=0.9, max_output_tokens=100)
    assert result.voice == CURRENT.voice


def test_apply_mask_with_a_group_replaces_the_message():
    patch = AgentConfig(parameters=ModelParameters(top_p=0.5))

    result = apply_mask(CURRENT, patch, resolve_update_mask(["parameters"]))

    assert result.parameters == ModelParameters(top_p=0.5)
    assert apply_mask(CURRENT, patch, frozenset()) == CURRENT


# -- names and etags --------------------------------------------------------------


def test_names_parse_or_fail_as_documented():
    assert parse_agent_name(f"agents/{AGENT_ID}", "name") == AGENT_ID
    assert parse_version_name(f"agents/{AGENT_ID}/versions/3") == (AGENT_ID, 3)
    for impossible_version in ("0", "-1", "x", "2147483648", "١"):
        assert parse_version_name(f"agents/{AGENT_ID}/versions/{impossible_version}") == (AGENT_ID, None)
    for unknown in ("agents/agt_short", f"agents/{AGENT_ID.upper()}", f"agents/{new_id('ses')}"):
        with pytest.raises(AgentNotFound):
            parse_agent_name(unknown, "name")
    for malformed in ("", "agents", "agents/", f"tenants/{AGENT_ID}", f"agents/{AGENT_ID}/versions/1"):
        with pytest.raises(InvalidArgument) as caught:
            parse_agent_name(malformed, "agent.name")
        assert fields_of(caught.value) == ["agent.name"]
    for malformed in (f"agents/{AGENT_ID}", f"agents/{AGENT_ID}/versions", f"agents/{AGENT_ID}/revisions/1"):
        with pytest.raises(InvalidArgument):
            parse_version_name(malformed)


def test_etags_are_stable_and_distinct_per_agent_and_version():
    other = new_id("agt")
    assert etag_for(AGENT_ID, 1) == etag_for(AGENT_ID, 1)
    assert len({etag_for(AGENT_ID, 1), etag_for(AGENT_ID, 2), etag_for(other, 1)}) == 3
    assert AGENT_ID not in etag_for(AGENT_ID, 1)


# -- validation ------------------------------------------------------------------


def validate(config: AgentConfig, max_prompt: int = 16_000) -> list[str]:
    return [
        v.field
        for v in validate_config(config, known_providers=("vendorA", "vendorB"), max_system_prompt_chars=max_prompt)
    ]


def test_a_valid_config_has_no_violations():
    assert validate(CURRENT) == []
    assert validate(AgentConfig(display_name="Minimal", primary_provider="vendorB")) == []


def test_the_prompt_limit_is_configurable():
    config = AgentConfig(display_name="x", primary_provider="vendorA", system_prompt="p" * 11)
    assert validate(config, max_prompt=11) == []
    assert validate(config, max_prompt=10) == ["agent.system_prompt"]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_temperature_is_accepted_exactly_within_0_and_2(value):
    config = AgentConfig(display_name="x", primary_provider="vendorA", parameters=ModelParameters(temperature=value))
    assert (validate(config) == []) == (0.0 <= value <= 2.0)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_top_p_is_accepted_exactly_within_0_exclusive_and_1(value):
    config = AgentConfig(display_name="x", primary_provider="vendorA", parameters=ModelParameters(top_p=value))
    assert (validate(config) == []) == (0.0 < value <= 1.0)


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_words_per_minute_is_0_or_within_80_and_450(value):
    config = AgentConfig(display_name="x", primary_provider="vendorA", voice=VoiceSettings(words_per_minute=value))
    assert (validate(config) == []) == (value == 0 or 80 <= value <= 450)
