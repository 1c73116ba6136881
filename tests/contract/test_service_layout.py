"""Every service has the one shape (docs/adding-a-service.md): a reader finds each kind of
code by its file name, and the layers that must not know protobuf do not import it.

- `servicer.py`: protobuf ⇄ domain, nothing else;
- `service.py` or `service/`: the use cases; `domain.py` or `domain/`: pure rules and values;
- `repository.py`: rows ⇄ domain values; `models.py`: the tables.

The check runs over every folder under services/, so a new service is covered the day it lands.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.layers import protobuf_imports

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
PACKAGES = sorted(p for p in SERVICES_DIR.glob("*/src/vocalbridge_*") if p.is_dir())
REQUIRED = ("servicer.py", "server.py", "config.py", "__main__.py", "models.py", "repository.py")
# The layers that hold no protobuf: what a use case, a rule or a row knows is the domain.
PROTOBUF_FREE = ("domain.py", "domain", "service.py", "service", "repository.py", "models.py")


def _protobuf_free_modules(package: Path) -> list[Path]:
    modules: list[Path] = []
    for name in PROTOBUF_FREE:
        path = package / name
        if path.is_dir():
            modules += sorted(path.rglob("*.py"))
        elif path.exists():
            modules.append(path)
    return modules


def test_every_service_is_checked():
    assert {p.parent.parent.name for p in PACKAGES} >= {"agents", "auth", "billing", "conversation"}


def test_the_check_sees_protobuf_imports():
    planted = (
        "from vocalbridge.billing.v1 import (\n    usage_event_pb2,\n)\nimport google.protobuf.duration_pb2 as d\n"
    )
    assert protobuf_imports(planted) == ["vocalbridge.billing.v1.usage_event_pb2", "google.protobuf.duration_pb2"]
    assert protobuf_imports("from vocalbridge_common.vocabulary import Channel\n") == []
    # A servicer is where protobuf lives: the check finds it there.
    assert all(protobuf_imports((package / "servicer.py").read_text()) for package in PACKAGES)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_each_kind_of_code_has_its_file(package: Path):
    missing = [name for name in REQUIRED if not (package / name).exists()]
    assert missing == []
    assert (package / "domain.py").exists() or (package / "domain").is_dir()
    assert (package / "service.py").exists() or (package / "service").is_dir()


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_use_cases_domain_and_repository_import_no_protobuf(package: Path):
    modules = _protobuf_free_modules(package)
    assert len(modules) >= 3
    offenders = {path.relative_to(package).as_posix(): protobuf_imports(path.read_text()) for path in modules}
    assert {name: found for name, found in offenders.items() if found} == {}
