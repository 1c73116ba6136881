"""Where each kind of code lives: the domain and the use cases never import protobuf
(generated `_pb2` modules or `google.protobuf`); presenters and the servicer do that."""

from __future__ import annotations

import ast
from pathlib import Path

import vocalbridge_conversation

PACKAGE = Path(vocalbridge_conversation.__file__).parent
PROTOBUF_FREE = ("domain", "service")


def protobuf_imports(source: str) -> list[str]:
    """The protobuf modules `source` imports directly."""
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


def test_the_check_sees_protobuf_imports():
    planted = "from vocalbridge.conversation.v1 import message_pb2\nimport google.protobuf.duration_pb2 as d\n"
    assert protobuf_imports(planted) == ["vocalbridge.conversation.v1.message_pb2", "google.protobuf.duration_pb2"]
    assert protobuf_imports("from vocalbridge_common.vocabulary import Channel\n") == []


def test_domain_and_use_cases_import_no_protobuf():
    modules = [path for folder in PROTOBUF_FREE for path in sorted((PACKAGE / folder).glob("*.py"))]
    assert len(modules) >= 8, "the layout moved: point this test at the domain and use-case modules"
    offenders = {path.relative_to(PACKAGE).as_posix(): protobuf_imports(path.read_text()) for path in modules}
    assert {name: found for name, found in offenders.items() if found} == {}
