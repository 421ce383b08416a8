"""The OpenAPI document covers every route, and schemathesis finds no 5xx and
no response that violates it (bounded number of examples)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types

import pytest

from config import load_settings
from tests.support import ADMIN_TOKEN


def test_every_route_is_documented(server):
    from app.server import create_app

    app = create_app(types.SimpleNamespace(settings=load_settings()), "unused")
    spec = server.client().get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.websocket:
            continue  # WebSocket upgrades are described in API.md, not in OpenAPI
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, f"{method} {path} is missing from /openapi.json"
    docs = server.client().get("/docs")
    assert docs.status_code == 200 and "openapi.json" in docs.text


def test_schemathesis_finds_no_server_errors_or_schema_violations(server):
    st = shutil.which("st", path=os.path.dirname(sys.executable))
    if st is None:
        pytest.skip("schemathesis is not installed")
    api_key = server.create_merchant("fuzzed")
    result = subprocess.run(
        [st, "run", f"{server.url}/openapi.json", "--max-examples", os.environ.get("PAYCAST_FUZZ_EXAMPLES", "8"),
         "--seed", "7", "--no-color", "--generation-database", "none", "--phases", "examples,fuzzing",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance",
         "--header", f"Authorization: Bearer {api_key}", "--request-timeout", "20", "--exclude-path", "/admin/merchants",
         "--exclude-path-regex", "^/admin/inbox",
         "--exclude-path", "/debug/tasks", "--suppress-health-check", "all", "--warnings", "off"],
        capture_output=True, text=True, timeout=600,
    )
    report = result.stdout[-8000:]
    assert result.returncode == 0, report
    assert "failures" not in report.split("SUMMARY")[-1].lower() or " 0 failures" in report, report
