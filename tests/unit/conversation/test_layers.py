"""Where each kind of conversation code lives: the domain, the use cases (sessions,
turns, idempotency) and the repository never import protobuf; presenters, the
servicer and the clients of other services do."""

from __future__ import annotations

from pathlib import Path

import vocalbridge_conversation
from tests.layers import protobuf_imports

PACKAGE = Path(vocalbridge_conversation.__file__).parent
PROTOBUF_FREE = [
    *sorted((PACKAGE / "domain").glob("*.py")),
    *sorted((PACKAGE / "service").glob("*.py")),
    PACKAGE / "repository.py",
    PACKAGE / "models.py",
]


def test_the_check_sees_protobuf_imports():
    planted = "from vocalbridge.conversation.v1 import message_pb2\nimport google.protobuf.duration_pb2 as d\n"
    assert protobuf_imports(planted) == ["vocalbridge.conversation.v1.message_pb2", "google.protobuf.duration_pb2"]
    assert protobuf_imports((PACKAGE / "presenters.py").read_text())
    assert protobuf_imports("from vocalbridge_common.vocabulary import Channel\n") == []


def test_domain_use_cases_and_repository_import_no_protobuf():
    assert len(PROTOBUF_FREE) >= 11, "the layout moved: point this test at the domain and use-case modules"
    offenders = {path.relative_to(PACKAGE).as_posix(): protobuf_imports(path.read_text()) for path in PROTOBUF_FREE}
    assert {name: found for name, found in offenders.items() if found} == {}
