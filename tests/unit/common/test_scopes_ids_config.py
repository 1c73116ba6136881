import pytest

from vocalbridge_common import scopes
from vocalbridge_common.config import CommonSettings, ConfigError, Env
from vocalbridge_common.ids import new_id, parse_resource_name


@pytest.mark.parametrize(
    "method, granted, allowed",
    [
        ("/vocalbridge.agents.v1.AgentService/ListAgents", {"read"}, True),
        ("/vocalbridge.agents.v1.AgentService/CreateAgent", {"read"}, False),
        ("/vocalbridge.agents.v1.AgentService/CreateAgent", {"write"}, True),
        ("/vocalbridge.agents.v1.AgentService/DeleteAgent", {"admin"}, True),
        ("/vocalbridge.auth.v1.AuthService/CreateApiKey", {"write"}, False),
        ("/vocalbridge.auth.v1.AuthService/CreateApiKey", {"admin"}, True),
        ("/vocalbridge.auth.v1.AuthService/CreateTenant", {"admin"}, False),
        ("/vocalbridge.auth.v1.AuthService/CreateTenant", {"operator"}, True),
        ("/vocalbridge.agents.v1.AgentService/GetAgent", {"operator"}, False),
        ("/vocalbridge.auth.v1.AuthService/GetCallerIdentity", {"read"}, True),
        ("/vocalbridge.auth.v1.AuthService/GetCallerIdentity", {"operator"}, True),
        ("/vocalbridge.billing.v1.BillingService/RecordUsage", {"admin"}, False),
        ("/vocalbridge.billing.v1.BillingService/RecordUsage", {"internal"}, True),
    ],
)
def test_scope_policy(method, granted, allowed):
    assert scopes.allows(granted, method) is allowed


def test_ids_sort_by_creation_and_parse():
    first, second = new_id("agt"), None
    import time

    time.sleep(0.002)
    second = new_id("agt")
    assert first < second
    assert parse_resource_name(f"agents/{first}", "agents", "agt") == first
    for bad in (f"agents/{first}x", f"sessions/{first}", "agents/agt_short", first, f"agents/{first}/versions/1"):
        assert parse_resource_name(bad, "agents", "agt") is None


def test_missing_required_setting_names_the_variable():
    with pytest.raises(ConfigError, match="VB_IDENTITY_SECRET"):
        CommonSettings.from_env("agents", 50052, Env({}))


def test_settings_defaults_to_sqlite_file_per_service():
    settings = CommonSettings.from_env("agents", 50052, Env({"VB_IDENTITY_SECRET": "x" * 32, "VB_DATA_DIR": "/tmp/d"}))
    assert settings.database_url == "sqlite+aiosqlite:////tmp/d/agents.db"
    assert settings.port == 50052
    with pytest.raises(ConfigError, match="VB_AGENTS_PORT"):
        CommonSettings.from_env("agents", 50052, Env({"VB_IDENTITY_SECRET": "x" * 32, "VB_AGENTS_PORT": "abc"}))
