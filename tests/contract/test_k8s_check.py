"""`make k8s` (tools/k8s/check.py) on the real manifests, and each of its checks shown to catch a
planted mistake: an object the Kubernetes schema refuses, an Envoy ConfigMap that is not a fresh
render (or that Envoy rejects), and a container checkov flags."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from tools.k8s import check

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
ENVOY = REPO_ROOT / ".venv" / "bin" / "envoy"


def _dev() -> list[dict]:
    return check.objects(check.render(check.K8S / "overlays" / "dev"))


def _deployment(objects: list[dict], name: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return found


def test_make_k8s_passes_on_the_committed_manifests(tmp_path):
    assert CHECKOV.exists(), "make k8s (or make test-contract) builds .venv-checkov from tools/k8s/checkov.lock"
    assert check.main(["--checkov", str(CHECKOV), "--envoy", str(ENVOY), "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"base.yaml", "dev.yaml", "prod.yaml"}


def test_the_schema_check_refuses_what_a_cluster_would():
    objects = _dev()
    assert check.schema_problems(objects) == []
    broken = copy.deepcopy(objects)
    _deployment(broken, "agents")["spec"]["replicas"] = "two"  # wrong type
    _deployment(broken, "billing")["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # misspelt
    found = check.schema_problems(broken)
    assert len(found) == 2, found
    assert any("Deployment/agents" in p and "replicas" in p for p in found), found
    assert any("Deployment/billing" in p and "livenessprobe" in p for p in found), found


def test_the_envoy_config_must_be_a_fresh_render_that_envoy_accepts():
    objects = _dev()
    assert check.envoy_config_problems(objects, str(ENVOY)) == []
    stale = copy.deepcopy(objects)
    (configmap,) = [o for o in stale if o["metadata"]["name"].startswith("envoy-config")]
    configmap["data"]["envoy.json"] = configmap["data"]["envoy.json"].replace('"timeout": "15s"', '"timeout": "16s"')
    assert any("fresh render" in p for p in check.envoy_config_problems(stale, str(ENVOY)))
    # A configuration Envoy itself refuses (an unknown field) is reported with Envoy's words.
    config = json.loads(configmap["data"]["envoy.json"])
    config["static_resources"]["clusters"][0]["no_such_field"] = 1
    problems = check.envoy_accepts(json.dumps(config), str(ENVOY))
    assert problems and "no_such_field" in problems[0]


def test_checkov_flags_a_container_that_breaks_the_rules(tmp_path):
    objects = _dev()
    deployment = _deployment(objects, "billing")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    found = check.checkov_problems(str(CHECKOV), [path])
    assert any("CKV_K8S_16" in p and "billing" in p for p in found), found  # privileged container
    assert any("CKV_K8S_20" in p and "billing" in p for p in found), found  # privilege escalation
