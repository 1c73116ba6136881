"""Checks of where each kind of code lives, shared by the services' layer tests."""

from __future__ import annotations

import ast


def protobuf_imports(source: str) -> list[str]:
    """The protobuf modules `source` imports directly (generated `_pb2` modules or `google.protobuf`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [f"{node.module or ''}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [name for name in names if name.startswith("google.protobuf") or "_pb2" in name.rsplit(".", 2)[-1]]
    return found
