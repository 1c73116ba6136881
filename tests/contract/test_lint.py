"""`make lint` (which `make test` runs first) really checks: each step of its chain fails on a
planted violation under the repository's own configuration, and passes once it is fixed, so a
green `make lint` means something. `buf lint` has its own control in test_buf_lint.py.

The chain itself is read from `make -n`, so that dropping a step from the Makefile fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"
SERVICE_PACKAGES = sorted(p.name for p in REPO_ROOT.glob("services/*/src/vocalbridge_*") if p.is_dir())


def _run(args: list[str], cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None):
    return subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=300, check=False, env=env)


# --------------------------------------------------------------------------- the chain


def test_make_lint_runs_the_whole_chain_in_order_and_make_test_runs_it_first():
    lint = _run(["make", "-n", "lint"], REPO_ROOT)
    assert lint.returncode == 0, lint.stderr
    steps = [
        "node_modules/.bin/buf lint",
        "tools/buf_breaking.sh",
        "-m ruff check",
        "-m ruff format --check",
        "-m mypy ",
    ]
    lines = lint.stdout.splitlines()
    found = [next((i for i, line in enumerate(lines) if step in line), -1) for step in steps]
    assert -1 not in found and found == sorted(found), f"make lint steps {steps} in order, got:\n{lint.stdout}"
    mypy = lines[found[-1]]
    packages = re.findall(r"-p (\S+)", mypy)
    assert packages[:3] == ["vocalbridge_common", "vocalbridge_devstack", "vocalbridge_edge"], mypy
    assert sorted(packages[3:]) == SERVICE_PACKAGES, mypy

    test = _run(["make", "-n", "test"], REPO_ROOT)
    assert test.returncode == 0, test.stderr
    out = test.stdout
    assert "-m mypy " in out and "-m pytest" in out, out
    assert out.index("-m mypy ") < out.index("-m pytest"), "make test must lint before it tests"


# --------------------------------------------------------------------------- ruff

# As if it were a module of the common library: stdin, named by a path inside the tree, so the
# repository's configuration (and its per-path rules) applies without writing into the tree.
PLANTED_PATH = "libs/common/src/vocalbridge_common/_planted.py"
PLANTED_RUFF = "import os\ndef shout( text ):\n  print(text.upper())\n"
FIXED_RUFF = """import logging

log = logging.getLogger(__name__)


def shout(text: str) -> None:
    log.info(text.upper())
"""


def _ruff(*args: str, source: str):
    return _run([sys.executable, "-m", "ruff", *args, "--stdin-filename", PLANTED_PATH, "-"], REPO_ROOT, source)


def test_ruff_check_catches_a_planted_violation():
    result = _ruff("check", "--output-format", "concise", source=PLANTED_RUFF)
    assert result.returncode == 1, result.stdout + result.stderr
    for code in ("F401", "I001", "T201"):  # unused import, import block, print left in code
        assert code in result.stdout, f"ruff check did not report {code}:\n{result.stdout}"
    fixed = _ruff("check", source=FIXED_RUFF)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


def test_ruff_format_check_catches_unformatted_code():
    result = _ruff("format", "--check", source=PLANTED_RUFF)
    assert result.returncode == 1, result.stdout + result.stderr
    fixed = _ruff("format", "--check", source=FIXED_RUFF)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


# --------------------------------------------------------------------------- mypy

PLANTED_MYPY = """
def double(value):
    return value * 2


count: int = "three"
"""
FIXED_MYPY = """
def double(value: int) -> int:
    return value * 2


count: int = 3
"""


def _mypy_on_planted(tmp_path: Path, package: str, source: str):
    """mypy with the repository's pyproject.toml on a package laid out where its config expects
    the common library (`libs/common/src`), holding only the planted module."""
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    root = tmp_path / "libs" / "common" / "src" / package
    root.mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("")
    (root / "planted.py").write_text(source)
    return _run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull, "-p", package], tmp_path)


def test_mypy_catches_a_planted_type_error_and_is_strict_on_the_common_library(tmp_path):
    result = _mypy_on_planted(tmp_path, "vocalbridge_common", PLANTED_MYPY)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "planted.py:6: error" in out and "[assignment]" in out, out
    # Strict for the common library and the services: an unannotated function is an error there.
    assert "planted.py:2: error" in out and "[no-untyped-def]" in out, out

    fixed = _mypy_on_planted(tmp_path, "vocalbridge_common", FIXED_MYPY)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


def test_mypy_catches_a_planted_type_error_outside_the_strict_packages(tmp_path):
    result = _mypy_on_planted(tmp_path, "vocalbridge_edge", PLANTED_MYPY)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "planted.py:6: error" in out and "[assignment]" in out, out


# --------------------------------------------------------------------------- buf breaking


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "lint test",
        "GIT_AUTHOR_EMAIL": "lint@test.invalid",
        "GIT_COMMITTER_NAME": "lint test",
        "GIT_COMMITTER_EMAIL": "lint@test.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    result = _run(["git", *args], repo, env=env)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def _buf_breaking(repo: Path) -> tuple[int, str]:
    assert BUF.is_file(), f"{BUF} is missing: run `npm ci` at the repository root"
    env = {k: v for k, v in os.environ.items() if k != "BUF_AGAINST"}
    result = _run([str(repo / "tools" / "buf_breaking.sh")], repo, env={**env, "BUF": str(BUF)})
    return result.returncode, result.stdout + result.stderr


def test_buf_breaking_flags_a_breaking_change_before_and_after_it_is_committed(tmp_path):
    """A copy of the contract in a throw-away repository, changed the way a careless edit would."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "buf.yaml", repo / "buf.yaml")
    shutil.copytree(REPO_ROOT / "protos", repo / "protos")
    shutil.copy(REPO_ROOT / "tools" / "buf_breaking.sh", repo / "tools" / "buf_breaking.sh")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "contract")

    code, out = _buf_breaking(repo)
    assert code == 0 and "first commit" in out, out

    agent = repo / "protos" / "vocalbridge" / "agents" / "v1" / "agent.proto"
    original = agent.read_text()
    # Compatible: a new field with a new number.
    compatible = original.replace(
        "  string system_prompt = 3;\n",
        "  string system_prompt = 3;\n  // A note for the agent's owners.\n  string notes = 99;\n",
    )
    assert compatible != original
    agent.write_text(compatible)
    _git(repo, "commit", "-q", "-am", "compatible")
    code, out = _buf_breaking(repo)
    assert code == 0 and "against HEAD~1" in out, out

    # Breaking: the field's number reused with another type, and a field deleted without `reserved`.
    breaking = compatible.replace("string system_prompt = 3;", "int64 system_prompt = 3;").replace(
        "  string fallback_provider = 5;\n", ""
    )
    agent.write_text(breaking)
    code, out = _buf_breaking(repo)  # uncommitted: the edit against HEAD
    assert code != 0 and "against HEAD " in out, out
    assert "system_prompt" in out and 'Previously present field "5"' in out, out

    _git(repo, "commit", "-q", "-am", "breaking")
    code, out = _buf_breaking(repo)  # committed, clean tree (CI): HEAD against HEAD~1
    assert code != 0 and "against HEAD~1" in out, out
    assert "system_prompt" in out and 'Previously present field "5"' in out, out
