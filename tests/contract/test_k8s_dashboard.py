"""The Grafana dashboard (deploy/grafana/vocalbridge.json) queries only metrics that exist: every
`vocalbridge_*` series it names is declared in the code (with the labels it groups by), and every
panel has a query."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "vocalbridge.json"
DECLARATION = re.compile(
    r'(?:metrics\.|= )(counter|histogram|gauge)\(\s*"(\w+)",\s*(?:"[^"]*"\s*)+,?\s*(?:#[^\n]*\n\s*)*(\([^)]*\))?', re.S
)
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def declared() -> dict[str, set[str]]:
    """Every exposed series name → the labels of its metric, from the declarations in the code."""
    series: dict[str, set[str]] = {}
    sources = [*REPO_ROOT.glob("libs/common/src/**/*.py"), *REPO_ROOT.glob("services/*/src/**/*.py")]
    for path in sources:
        for kind, name, labels in DECLARATION.findall(path.read_text()):
            names = set(re.findall(r'"(\w+)"', labels or ""))
            for suffix in SUFFIXES[kind]:
                series[f"vocalbridge_{name}{suffix}"] = names | ({"le"} if suffix == "_bucket" else set())
    return series


def queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    found = []
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        found += [target["expr"] for target in panel["targets"]]
    return found


def test_every_vocalbridge_series_the_dashboard_queries_is_declared_with_its_labels():
    series = declared()
    assert "vocalbridge_grpc_server_handling_seconds_count" in series  # the declarations were found
    used = 0
    for expr in queries():
        for name in re.findall(r"vocalbridge_\w+", expr):
            used += 1
            assert name in series, f"{name} is not declared anywhere (query: {expr})"
            for group in re.findall(r"by \(([^)]*)\)", expr):
                labels = {label.strip() for label in group.split(",")}
                assert labels <= series[name], f"{name} has no label {labels - series[name]} (query: {expr})"
    assert used >= 8
