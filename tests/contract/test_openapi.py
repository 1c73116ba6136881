"""The OpenAPI document (tools/gen_openapi.py, run by `make gen`) is valid OpenAPI, describes every
HTTP rule of the descriptor set, and follows the protobuf JSON mapping the transcoder speaks."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from vocalbridge_edge.descriptors import read_descriptor_set

REPO_ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR_SET = REPO_ROOT / "gen" / "vocalbridge.pb"
GENERATED = REPO_ROOT / "gen" / "openapi.json"
SCHEMAS = "#/components/schemas/"


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict:
    """A fresh generation from the descriptor set, by the command `make gen` runs."""
    out = tmp_path_factory.mktemp("openapi") / "openapi.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "tools" / "gen_openapi.py"),
            "--descriptor-set",
            str(DESCRIPTOR_SET),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


def http_rules() -> list[tuple[str, str, str]]:
    """(full method name, HTTP verb, path template) of every binding in the descriptor set."""
    rules = []
    for file in read_descriptor_set(DESCRIPTOR_SET).file:
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                pending = [method.options.Extensions[annotations_pb2.http]]
                while pending:
                    rule = pending.pop()
                    pending.extend(rule.additional_bindings)
                    kind = rule.WhichOneof("pattern")
                    verb, template = (
                        (rule.custom.kind.lower(), rule.custom.path)
                        if kind == "custom"
                        else (kind, getattr(rule, kind))
                    )
                    rules.append((f"{file.package}.{service.name}.{method.name}", verb, template))
    return rules


def sample_url(template: str) -> str:
    """A concrete URL for a template: `/v1/{name=agents/*}:revoke` → `/v1/agents/x1:revoke`."""
    return re.sub(
        r"\{[^}=]+(?:=([^}]*))?\}", lambda m: (m.group(1) or "*").replace("**", "x1").replace("*", "x1"), template
    )


def missing_rules(document: dict) -> list[str]:
    """Rules whose URL and verb match no operation of the document, or the wrong RPC."""
    operations = [
        (re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"), verb, op)
        for path, item in document["paths"].items()
        for verb, op in item.items()
    ]
    problems = []
    for rpc, verb, template in http_rules():
        url = sample_url(template)
        found = [op for pattern, v, op in operations if v == verb and pattern.match(url)]
        if len(found) != 1 or found[0].get("x-grpc-method") != rpc:
            problems.append(f"{verb.upper()} {template} ({rpc}): {len(found)} operations")
    return problems


def test_the_document_is_valid_openapi(document):
    assert document["openapi"].startswith("3.")
    validate(document)


def test_the_validator_refuses_a_broken_document(document):
    broken = copy.deepcopy(document)
    path = next(p for p in broken["paths"] if "{" in p)
    for operation in broken["paths"][path].values():
        operation["parameters"] = [p for p in operation.get("parameters", []) if p["in"] != "path"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_http_rule_of_the_descriptor_set_is_an_operation(document):
    rules = http_rules()
    assert len(rules) >= 20, "the descriptor set lost its HTTP rules"
    assert missing_rules(document) == []
    assert sum(len(item) for item in document["paths"].values()) == len(rules)


def test_a_missing_operation_is_caught(document):
    planted = copy.deepcopy(document)
    del planted["paths"]["/v1/me"]["get"]
    assert missing_rules(planted) == ["GET /v1/me (vocalbridge.auth.v1.AuthService.GetCallerIdentity): 0 operations"]


def test_make_gen_wrote_the_current_document(document):
    assert GENERATED.is_file(), "run `make gen`"
    assert json.loads(GENERATED.read_text()) == document, "gen/openapi.json is stale: run `make gen`"


def _schema(document: dict, name: str) -> dict:
    return document["components"]["schemas"][name]


def test_schemas_follow_the_protobuf_json_mapping(document):
    usage = _schema(document, "vocalbridge.conversation.v1.Usage")["properties"]
    assert usage["costMicros"]["type"] == "string" and usage["costMicros"]["format"] == "int64"
    assert usage["promptTokens"]["type"] == "integer"
    agent = _schema(document, "vocalbridge.agents.v1.Agent")["properties"]
    assert agent["createTime"]["type"] == "string" and agent["createTime"]["format"] == "date-time"
    assert agent["name"].get("readOnly") is not True  # IDENTIFIER: sent on update
    assert agent["version"]["readOnly"] is True
    attempt = _schema(document, "vocalbridge.conversation.v1.Attempt")["properties"]
    assert attempt["latency"]["type"] == "string" and "pattern" in attempt["latency"]
    assert attempt["outcome"] == {
        "$ref": SCHEMAS + "vocalbridge.conversation.v1.AttemptOutcome",
        "description": "What happened.",
    }
    outcome = _schema(document, "vocalbridge.conversation.v1.AttemptOutcome")
    assert outcome["type"] == "string" and "ATTEMPT_OUTCOME_SUCCESS" in outcome["enum"]
    metadata = _schema(document, "vocalbridge.conversation.v1.Session")["properties"]["metadata"]
    assert metadata["additionalProperties"]["type"] == "string"
    audio = _schema(document, "vocalbridge.voice.v1.Audio")["properties"]["content"]
    assert audio["format"] == "byte"
    update = document["paths"]["/v1/agents/{agentsId}"]["patch"]
    mask = next(p for p in update["parameters"] if p["name"] == "updateMask")
    assert mask["in"] == "query" and mask["schema"]["type"] == "string"
    for name, schema in document["components"]["schemas"].items():
        for prop in schema.get("properties", {}):
            assert re.fullmatch(r"@type|[a-z][A-Za-z0-9]*", prop), f"{name}.{prop} is not lowerCamelCase"


def test_errors_are_google_rpc_status(document):
    error = document["components"]["responses"]["Error"]["content"]["application/json"]["schema"]
    assert error == {"$ref": SCHEMAS + "google.rpc.Status"}
    status = _schema(document, "google.rpc.Status")["properties"]
    assert {"code", "message", "details"} <= status.keys()
    for detail in ("google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RequestInfo"):
        assert detail in document["components"]["schemas"]
    for item in document["paths"].values():
        for operation in item.values():
            # The OpenAI-compatible API's errors are OpenAI's (the next test).
            own = operation["x-grpc-method"].startswith("vocalbridge.openai.v1.")
            expected = "OpenAIError" if own else "Error"
            assert operation["responses"]["default"] == {"$ref": f"#/components/responses/{expected}"}


def test_paths_query_bodies_and_headers_match_the_rules(document):
    summary = document["paths"]["/v1/usage:summary"]["get"]
    names = {p["name"]: p for p in summary["parameters"]}
    assert {"startTime", "endTime", "groupBy", "agent", "provider", "channel"} == names.keys()
    assert names["groupBy"]["schema"]["$ref"] == SCHEMAS + "vocalbridge.billing.v1.GroupBy"
    assert names["startTime"]["schema"]["format"] == "date-time"

    send = document["paths"]["/v1/sessions/{sessionsId}/messages"]["post"]
    body = send["requestBody"]["content"]["application/json"]["schema"]
    assert "session" not in body["properties"], "a field bound in the path is not in the body"
    assert body["required"] == ["content"]
    key = next(p for p in send["parameters"] if p["in"] == "header")
    assert key["name"] == "Idempotency-Key" and key["required"] is True
    stream = document["paths"]["/v1/sessions/{sessionsId}/messages:stream"]["post"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert next(p for p in stream["parameters"] if p["in"] == "header")["required"] is True

    create = document["paths"]["/v1/agents"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": SCHEMAS + "vocalbridge.agents.v1.Agent"
    }
    delete = document["paths"]["/v1/agents/{agentsId}"]["delete"]
    assert [p["name"] for p in delete["parameters"]] == ["agentsId", "etag"]


def test_comments_are_descriptions(document):
    agent = _schema(document, "vocalbridge.agents.v1.Agent")
    assert agent["description"].startswith("An agent: the configuration a session talks to.")
    assert agent["properties"]["displayName"]["description"] == "Required. Human-readable name, 1 to 100 characters."
    me = document["paths"]["/v1/me"]["get"]
    assert me["summary"] == "Returns who the caller is: tenant, key and scopes."
    assert {t["name"] for t in document["tags"]} >= {"AgentService", "ConversationService", "BillingService"}


def test_the_openai_compatible_routes_are_raw_bodies_with_openais_errors(document):
    """Their bodies are OpenAI's JSON (google.api.HttpBody), and the edge renders their errors in
    OpenAI's shape, not as google.rpc.Status."""
    create = document["paths"]["/v1/chat/completions"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"description": "The raw request body."}
    assert "Server-Sent Events" in create["responses"]["200"]["description"]
    for operation in (create, document["paths"]["/v1/models"]["get"]):
        assert operation["responses"]["default"] == {"$ref": "#/components/responses/OpenAIError"}
    error = document["components"]["responses"]["OpenAIError"]["content"]["application/json"]["schema"]
    assert error["properties"]["error"]["required"] == ["message", "type", "code"]
    assert document["paths"]["/v1/agents"]["get"]["responses"]["default"] == {"$ref": "#/components/responses/Error"}
