"""`make k8s`: proof, without a cluster, that deploy/k8s describes valid Kubernetes objects.

1. renders the base and every overlay with `kubectl kustomize` (kustomize v5 built into kubectl);
2. validates every rendered object against the Kubernetes OpenAPI schema of KUBERNETES_VERSION,
   offline and strictly (unknown fields are errors), with kubernetes-validate, which ships the
   schemas;
3. checks that the Envoy configuration in each overlay's envoy-config ConfigMap is exactly what
   the edge renderer makes now (`python -m vocalbridge_edge --profile k8s`), and that Envoy itself
   accepts it with the repository's descriptor set;
4. runs checkov over the rendered overlays and every Dockerfile (deploy/k8s/checkov.yaml lists
   each skipped check with its reason).

The rendered overlays are written to var/k8s/<overlay>.yaml for a look (and for the manifest
smoke test). Exit status 1, with every problem listed, if anything fails.

    .venv/bin/python tools/k8s/check.py [--checkov .venv-checkov/bin/checkov] [--skip-checkov]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
TARGETS = ("base", "overlays/dev", "overlays/prod")
KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "vocalbridge"
CHECKOV_CONFIG = K8S / "checkov.yaml"
DOCKERFILES = (
    "services/base.Dockerfile",
    *sorted(str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("services/*/Dockerfile")),
    "gateway-envoy/Dockerfile",
    "web/Dockerfile",
)


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        raise SystemExit("kubectl (1.27+, with kustomize v5 built in) is needed: it is not on PATH")
    return found


def render(target: str | Path) -> str:
    """`kubectl kustomize` of a kustomization directory, as YAML text."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(target)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {target} failed:\n{result.stderr}")
    return result.stdout


def objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def describe(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_problems(docs: Iterable[dict[str, Any]], version: str = KUBERNETES_VERSION) -> list[str]:
    """Every object against the Kubernetes schema of `version`, strictly (no unknown fields)."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    problems = []
    for obj in docs:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except ValidationError as error:
            # The first violation of each object (fix it, and the next one shows).
            where = ".".join(str(p) for p in error.path)
            problems.append(f"{describe(obj)}: {where}: {error.message}")
        except SchemaNotFoundError as error:
            problems.append(f"{describe(obj)}: no schema for it in Kubernetes {version}: {error}")
    return problems


def fresh_envoy_config(namespace: str = NAMESPACE) -> str:
    from vocalbridge_edge import k8s_params, render_envoy_config

    return render_envoy_config(k8s_params(namespace=namespace))


def envoy_config_problems(docs: Iterable[dict[str, Any]], envoy: str | None = None) -> list[str]:
    """The envoy-config ConfigMap holds exactly a fresh render, and Envoy accepts it."""
    configmaps = [o for o in docs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("envoy-config")]
    if len(configmaps) != 1:
        return [f"expected one envoy-config ConfigMap, found {len(configmaps)}"]
    data = configmaps[0].get("data", {})
    if list(data) != ["envoy.json"]:
        return [f"envoy-config holds {sorted(data)}, expected envoy.json only"]
    if data["envoy.json"] != fresh_envoy_config():
        return ["envoy-config differs from a fresh render: run deploy/k8s/render-envoy.sh and commit the result"]
    return envoy_accepts(data["envoy.json"], envoy) if envoy else []


def envoy_accepts(text: str, envoy: str) -> list[str]:
    """`envoy --mode validate`, with the descriptor set at its in-image path mapped to gen/."""
    descriptor = REPO_ROOT / "gen" / "vocalbridge.pb"
    if not descriptor.is_file():
        return [f"{descriptor} is missing: run `make gen`"]
    config = json.loads(text.replace("/etc/vocalbridge/vocalbridge.pb", str(descriptor)))
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        json.dump(config, file)
        file.flush()
        result = subprocess.run(
            [envoy, "--mode", "validate", "-c", file.name, "--log-level", "error"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    return [] if result.returncode == 0 else [f"envoy rejects the configuration:\n{result.stdout}{result.stderr}"]


def checkov_problems(checkov: str, files: Sequence[Path], config: Path = CHECKOV_CONFIG) -> list[str]:
    """checkov over rendered manifests and Dockerfiles; a failed check is a problem."""
    args = [checkov, "--config-file", str(config), "--output", "json"]
    for file in files:
        args += ["-f", str(file)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, cwd=REPO_ROOT)
    if result.returncode not in (0, 1):
        return [f"checkov failed to run ({result.returncode}):\n{result.stderr[-3000:]}"]
    reports = json.loads(result.stdout) if result.stdout.strip() else []
    problems = []
    for report in reports if isinstance(reports, list) else [reports]:
        for failed in report.get("results", {}).get("failed_checks", []):
            problems.append(
                f"checkov {failed['check_id']} ({failed['check_name']}): {failed['resource']} in {failed['file_path']}"
            )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/k8s/check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--checkov", default=str(REPO_ROOT / ".venv-checkov" / "bin" / "checkov"))
    parser.add_argument("--envoy", default=str(Path(sys.executable).parent / "envoy"))
    parser.add_argument("--out", default=str(REPO_ROOT / "var" / "k8s"))
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    rendered: list[Path] = []
    for target in TARGETS:
        name = Path(target).name
        try:
            text = render(K8S / target)
        except RuntimeError as error:
            problems.append(str(error))
            continue
        path = out / f"{name}.yaml"
        path.write_text(text)
        docs = objects(text)
        found = schema_problems(docs) + envoy_config_problems(docs, args.envoy)
        problems += [f"{target}: {p}" for p in found]
        print(
            f"{target}: {len(docs)} objects rendered, schema of Kubernetes {KUBERNETES_VERSION}: "
            f"{'ok' if not found else f'{len(found)} problem(s)'}"
        )
        if target != "base":  # the base alone is never deployed; its objects are in both overlays
            rendered.append(path)

    if not Path(args.checkov).exists():
        problems.append(f"{args.checkov} is missing: `make k8s` builds it from tools/k8s/checkov.lock")
    else:
        found = checkov_problems(args.checkov, [*rendered, *(REPO_ROOT / d for d in DOCKERFILES)])
        print(
            f"checkov over {len(rendered)} overlays and {len(DOCKERFILES)} Dockerfiles: "
            f"{'ok' if not found else f'{len(found)} failed check(s)'}"
        )
        problems += found

    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
