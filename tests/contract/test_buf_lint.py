"""`buf lint` (npm @bufbuild/buf, installed by `npm ci`) passes on the
contract with the repository's buf.yaml, and that configuration really lints:
a proto that breaks the style guide in the same workspace is reported."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"


def _buf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # A missing binary must fail the suite, never skip it.
    assert BUF.is_file(), f"{BUF} is missing: run `npm ci` at the repository root"
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_buf_lint_passes():
    result = _buf("lint", cwd=REPO_ROOT)
    assert result.returncode == 0, f"buf lint failed:\n{result.stdout}{result.stderr}"


def test_buf_lint_reports_violations(tmp_path):
    """The same buf.yaml flags a badly written contract (so the passing run
    above is meaningful) while still leaving the vendored google protos alone."""
    shutil.copy(REPO_ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(REPO_ROOT / "protos", tmp_path / "protos")
    bad = tmp_path / "protos" / "vocalbridge" / "bad" / "v1"
    bad.mkdir(parents=True)
    (bad / "bad_service.proto").write_text(
        'syntax = "proto3";\n'
        "package vocalbridge.bad.v1;\n"
        'import "google/api/annotations.proto";\n'
        "enum Colour { RED = 0; }\n"
        "message Thing { string Name = 1; }\n"
    )
    result = _buf("lint", cwd=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "bad_service.proto" in out
    for fragment in (
        '"RED" should be prefixed with "COLOUR_"',
        "lower_snake_case",
        "is unused",
        "should have a non-empty comment",
    ):
        assert fragment in out, f"buf lint did not report {fragment!r}:\n{out}"
    assert "third_party" not in out, out
