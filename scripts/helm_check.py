"""Lint, render and validate the Helm chart with the tools of .venv-tools (no helm, no cluster).

Run it with the tools venv's Python (scripts/setup-helm-tools.sh creates it):

    .venv-tools/bin/python scripts/helm_check.py                       # default values
    .venv-tools/bin/python scripts/helm_check.py -f my-values.yaml --set gameserver.replicas=5
    .venv-tools/bin/python scripts/helm_check.py --show                # print the manifests too

It lints the chart (strict), renders it offline with Helm's own Go SDK (helm-python-sdk),
validates every manifest against the Kubernetes OpenAPI schemas (kubernetes-validate, strict,
Kubernetes 1.29 and the newest version it ships; the prometheus-operator kinds against the
minimal schemas below), and runs checkov on the result. Exit 0 when all of that passes.

tests/packaging/test_helm.py drives the same code through the JSON sub-commands
``render-json`` and ``lint-json`` (request on stdin, answer on stdout), because these
packages live in .venv-tools and not in the project's .venv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import latest_version

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "gamebackbone"
RELEASE = "gb"
NAMESPACE = "games"
#: The oldest Kubernetes the chart is validated against (Chart.yaml says >= 1.25; 1.29 is the
#: oldest release still commonly run at home), plus the newest schema version shipped.
KUBE_VERSIONS = ("1.29.0", latest_version())

# --- prometheus-operator CRDs ------------------------------------------------------------------
# kubernetes-validate knows only built-in kinds. These are minimal schemas written after the
# monitoring.coreos.com/v1 CRDs (prometheus-operator 0.7x): every field the chart uses, with its
# type, and additionalProperties false so a misspelt field fails here as it would on apply.

_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": _STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "targetLabels": {"type": "array", "items": {"type": "string"}},
                    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "selector": _LABEL_SELECTOR,
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "targetPort": {"type": ["integer", "string"]},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                                "relabelings": {"type": "array"},
                                "metricRelabelings": {"type": "array"},
                            },
                        },
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "limit": {"type": "integer"},
                                "partial_response_strategy": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "additionalProperties": False,
                                        # A rule is an alerting rule or a recording rule.
                                        "oneOf": [
                                            {"required": ["alert"]},
                                            {"required": ["record"]},
                                        ],
                                        "properties": {
                                            "alert": {"type": "string", "minLength": 1},
                                            "record": {"type": "string", "minLength": 1},
                                            "expr": {"type": ["integer", "string"]},
                                            "for": _DURATION,
                                            "keep_firing_for": _DURATION,
                                            "labels": _STRING_MAP,
                                            "annotations": _STRING_MAP,
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate_document(doc: dict[str, Any], versions: tuple[str, ...] = KUBE_VERSIONS) -> list[str]:
    """Problems of one manifest: schema violations, or no schema for its kind (a failure)."""
    kind = doc.get("kind")
    api_version = doc.get("apiVersion")
    crd = CRD_SCHEMAS.get((str(api_version), str(kind)))
    if crd is not None:
        validator = jsonschema.Draft7Validator(crd)
        problems = [
            f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
            for error in validator.iter_errors(doc)
        ]
        if kind == "PrometheusRule" and not problems:
            names = [group["name"] for group in doc["spec"]["groups"]]
            if len(names) != len(set(names)):
                problems.append(f"spec/groups: duplicate group names {names}")
        return [f"{kind} (vendored minimal CRD schema): {p}" for p in problems]
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            problems.append(f"k8s {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"k8s {version}: {exc.message}")
    return problems


def parse_manifests(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """The documents of the rendered templates (NOTES.txt and empty documents left out)."""
    docs = []
    for template, text in sorted(manifests.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for index, doc in enumerate(yaml.safe_load_all(text)):
            if doc is None:
                continue
            docs.append({"template": template, "index": index, "doc": doc})
    return docs


def render(values: dict[str, Any], release: str = RELEASE,
           namespace: str = NAMESPACE) -> dict[str, Any]:
    """Render, parse and validate; ``{"ok": False, "error": ...}`` when Helm refuses."""
    try:
        with helm.Chart.load(str(CHART)) as chart:
            manifests = chart.render(values, name=release, namespace=namespace,
                                     is_install=True)
    except helm.HelmError as exc:
        return {"ok": False, "error_type": type(exc).__name__, "error": str(exc)}
    docs = parse_manifests(manifests)
    for entry in docs:
        entry["problems"] = validate_document(entry["doc"])
    return {"ok": True, "manifests": manifests, "documents": docs}


def lint(values: dict[str, Any], kube_version: str | None = None) -> dict[str, Any]:
    return helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE,
                     kube_version=kube_version)


def checkov(files: dict[str, str]) -> dict[str, Any]:
    """checkov's Kubernetes checks over ``{file name: manifests}``, offline.

    Returns ``{"failed": [...], "skipped": [...], "passed": N}``; each finding has the file,
    the check id, the resource and (for skips) the suppression's reason.
    """
    with tempfile.TemporaryDirectory(prefix="helm-checkov-") as tmp:
        for name, text in files.items():
            Path(tmp, name).write_text(text)
        env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false")
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "checkov"), "--directory", tmp,
             "--framework", "kubernetes", "--output", "json", "--skip-download", "--soft-fail"],
            capture_output=True, text=True, env=env, timeout=600, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"checkov exited {proc.returncode}: {proc.stderr[-2000:]}")
        report = json.loads(proc.stdout)
        reports = report if isinstance(report, list) else [report]
        failed, skipped, passed = [], [], 0
        for rep in reports:
            results = rep.get("results", {})
            for check in results.get("failed_checks", []):
                failed.append({"file": check["file_path"].lstrip("/"), "check": check["check_id"],
                               "name": check["check_name"], "resource": check["resource"]})
            for check in results.get("skipped_checks", []):
                skipped.append({"file": check["file_path"].lstrip("/"), "check": check["check_id"],
                                "resource": check["resource"],
                                "reason": (check.get("check_result") or {}).get(
                                    "suppress_comment", "")})
            passed += len(results.get("passed_checks", []))
        return {"failed": failed, "skipped": skipped, "passed": passed}


def to_yaml_stream(docs: list[dict[str, Any]]) -> str:
    return "".join(f"---\n# Source: {d['template']}\n{yaml.safe_dump(d['doc'], sort_keys=False)}"
                   for d in docs)


# --- command line ------------------------------------------------------------------------------


def _json_command(command: str) -> int:
    request = json.load(sys.stdin)
    if command == "render-json":
        answer = {name: render(values, request.get("release", RELEASE),
                               request.get("namespace", NAMESPACE))
                  for name, values in request["cases"].items()}
    elif command == "lint-json":
        answer = {name: lint(values, request.get("kube_version"))
                  for name, values in request["cases"].items()}
    elif command == "checkov-json":
        answer = checkov(request["files"])
    elif command == "yaml-json":
        answer = [list(yaml.safe_load_all(Path(path).read_text())) for path in request["files"]]
    elif command == "versions":
        answer = {"helm_sdk": helm.helm_sdk_version(), "helm_c": helm.helm_c_version(),
                  "helm_python_sdk": helm.__version__, "kube_versions": list(KUBE_VERSIONS)}
    else:
        raise SystemExit(f"unknown command {command}")
    json.dump(answer, sys.stdout)
    return 0


def _set_value(values: dict[str, Any], expression: str) -> None:
    parsed = helm.parse_set_string(expression)

    def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(values, parsed)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("render-json", "lint-json", "checkov-json", "yaml-json", "versions"):
        return _json_command(argv[0])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-f", "--values", action="append", default=[], type=Path,
                        help="values file (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="like helm --set")
    parser.add_argument("--show", action="store_true", help="print the rendered manifests")
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for path in args.values:
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            values[key] = value
    for expression in args.set:
        _set_value(values, expression)

    ok = True
    report = lint(values, "v" + KUBE_VERSIONS[0])
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    for m in report["messages"]:
        print(f"lint [{ {1: 'INFO', 2: 'WARNING', 3: 'ERROR'}.get(m['severity'], '?') }] "
              f"{m['path']}: {m['error'].strip()}")
    ok &= not findings and not report["errors"]
    result = render(values)
    if not result["ok"]:
        print(f"✗ render: {result['error']}")
        return 1
    docs = result["documents"]
    for entry in docs:
        doc = entry["doc"]
        label = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        for problem in entry["problems"]:
            print(f"✗ {label}: {problem}")
            ok = False
    print(f"rendered {len(docs)} manifests; validated against Kubernetes "
          f"{', '.join(KUBE_VERSIONS)} (strict)")
    stream = to_yaml_stream(docs)
    if args.show:
        print(stream)
    found = checkov({"rendered.yaml": stream})
    for check in found["failed"]:
        print(f"✗ checkov {check['check']} {check['resource']}: {check['name']}")
        ok = False
    print(f"checkov: {found['passed']} passed, {len(found['failed'])} failed, "
          f"{len(found['skipped'])} skipped with a reason in the chart")
    print("✓ chart OK" if ok else "✗ chart has problems")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
