"""Where each kind of billing code lives: the domain, the use cases (ledger, analytics,
prices) and the repository never import protobuf; presenters and the servicer do."""

from __future__ import annotations

from pathlib import Path

import vocalbridge_billing
from tests.layers import protobuf_imports

PACKAGE = Path(vocalbridge_billing.__file__).parent
PROTOBUF_FREE = ("domain.py", "ledger.py", "analytics.py", "prices.py", "repository.py", "models.py")


def test_the_check_sees_protobuf_imports():
    planted = (
        "from vocalbridge.billing.v1 import (\n    usage_event_pb2,\n)\nfrom google.protobuf import duration_pb2\n"
    )
    assert protobuf_imports(planted) == ["vocalbridge.billing.v1.usage_event_pb2", "google.protobuf.duration_pb2"]
    assert protobuf_imports((PACKAGE / "presenters.py").read_text())
    assert protobuf_imports("from vocalbridge_common.vocabulary import Channel\n") == []


def test_domain_use_cases_and_repository_import_no_protobuf():
    offenders = {name: protobuf_imports((PACKAGE / name).read_text()) for name in PROTOBUF_FREE}
    assert {name: found for name, found in offenders.items() if found} == {}
