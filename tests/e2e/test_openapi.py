"""The OpenAPI document covers every route, and schemathesis finds no 5xx and
no response that violates it (bounded number of examples)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import types

import pytest

from config import load_settings
from tests.support import ADMIN_TOKEN, skip_or_fail


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


def test_documented_connectors_are_the_servers(server, api_key):
    """The connector enums of the document name exactly the connectors a server has."""
    spec = server.client().get("/openapi.json").json()
    with server.client(api_key) as c:
        served = {connector["name"] for connector in c.get("/v1/connectors").json()}
    documented = spec["components"]["schemas"]["CreatePayment"]["properties"]["connector"]["anyOf"][0]["enum"]
    assert set(documented) == served


def _with_links(spec: dict) -> dict:
    """``spec`` plus OpenAPI links: the ``id`` of what a POST creates feeds every
    operation on ``<that path>/{param}/...``, so stateful sequences reach real objects
    (``POST /v1/payments`` → ``GET|confirm|capture|cancel /v1/payments/{id}``)
    instead of answering 404 to random ids."""
    spec = json.loads(json.dumps(spec))
    paths = spec["paths"]
    for path, ops in paths.items():
        post = ops.get("post")
        if post is None or "{" in path:
            continue
        for status, response in post.get("responses", {}).items():
            if not status.startswith("2"):
                continue
            links = response.setdefault("links", {})
            for target, target_ops in paths.items():
                match = re.fullmatch(re.escape(path) + r"/\{([^}/]+)\}(/.*)?", target)
                if not match or "{" in (match.group(2) or ""):
                    continue
                for method, op in target_ops.items():
                    links[f"{op['operationId']}"] = {"operationId": op["operationId"],
                                                     "parameters": {match.group(1): "$response.body#/id"}}
    return spec


# Values the API accepts where the documented schema cannot say so (a Luhn-valid
# test card, an ISO currency the simulators take). Only the copy fed to
# schemathesis is narrowed, so its creates succeed and the stateful phase has
# real ids to chain; the served document is untouched.
_GUIDED = {
    "currency": {"type": "string", "enum": ["INR", "USD"]},
    "number": {"type": "string", "enum": ["4242424242424242", "4000000000000002", "4000000000009995"]},
    "vpa": {"type": "string", "enum": ["success@upi", "failure@upi", "pending@upi"]},
}


# Fields whose validity depends on another object's state, which no schema can say:
# a payment for an order must have the order's amount and currency (400 otherwise);
# a card token needs the merchant's Stripe account (connector_account_missing otherwise).
_STATEFUL = {"CreatePayment": ("order_id",), "PaymentMethod": ("token",)}


def _guided(node):
    """Narrow properties named in ``_GUIDED`` wherever they appear in the document; drop ``_STATEFUL``."""
    if isinstance(node, dict) and "components" in node:
        for name, fields in _STATEFUL.items():
            for field_name in fields:
                node["components"]["schemas"][name]["properties"].pop(field_name, None)
    if isinstance(node, dict):
        for name, schema in node.get("properties", {}).items():
            if name in _GUIDED and isinstance(schema, dict) and schema.get("type", "string") == "string":
                node["properties"][name] = dict(_GUIDED[name])
        for value in node.values():
            _guided(value)
    elif isinstance(node, list):
        for value in node:
            _guided(value)
    return node


def test_openapi_links_connect_creates_to_their_objects(server):
    spec = _with_links(server.client().get("/openapi.json").json())
    created = spec["paths"]["/v1/payments"]["post"]["responses"]
    targets = {link["operationId"] for response in created.values() for link in response.get("links", {}).values()}
    by_id = {op["operationId"]: (re.sub(r"\{[^}]+\}", "{id}", path), method)
             for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert {by_id[t] for t in targets} >= {("/v1/payments/{id}", "get"), ("/v1/payments/{id}/confirm", "post"),
                                          ("/v1/payments/{id}/capture", "post"), ("/v1/payments/{id}/cancel", "post")}
    for response in created.values():
        for link in response.get("links", {}).values():
            assert list(link["parameters"].values()) == ["$response.body#/id"]


# Few examples per operation (PAYCAST_FUZZ_EXAMPLES raises it).
_EXAMPLES = """
[phases.examples.generation]
max-examples = {n}
[phases.fuzzing.generation]
max-examples = {n}
""".format(n=int(os.environ.get("PAYCAST_FUZZ_EXAMPLES", "8")))


def _schemathesis(server, tmp_path, config_toml: str, *args: str) -> str:
    """Run ``st run`` against the live server (a new merchant's key); its report (stdout)."""
    st = shutil.which("st", path=os.path.dirname(sys.executable))
    if st is None:
        skip_or_fail("schemathesis is not installed")
    api_key = server.create_merchant("fuzzed")
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(_guided(_with_links(server.client().get("/openapi.json").json()))))
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_toml)
    result = subprocess.run(
        [st, "--config-file", str(config), "run", str(schema), "--url", server.url,
         "--seed", "7", "--no-color", "--generation-database", "none",
         "--header", f"Authorization: Bearer {api_key}", "--request-timeout", "20",
         "--exclude-path", "/admin/merchants",
         "--exclude-path-regex", "^/admin/inbox", "--exclude-path", "/debug/tasks", "--suppress-health-check", "all",
         *args],
        capture_output=True, text=True, timeout=560,
    )
    report = result.stdout[-12000:]
    print(report)  # warnings and coverage land in the test output
    assert result.returncode == 0, report
    return report


# Every status but 400: well-formed data may be refused for the state it meets (404 unknown
# id, 409, 402 declined, 422 an Idempotency-Key schemathesis reuses from its examples with
# other parameters) but never as malformed.
_NOT_MALFORMED = ["2xx", "401", "402", "403", "404", "409", "413", "422", "429", "503"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_positive_cases_are_never_refused_as_malformed(server, tmp_path):
    """Data the document calls valid is never answered 400: the request schemas say
    everything validation checks (required, enums, bounds, unknown fields)."""
    _schemathesis(server, tmp_path, _EXAMPLES + f"""
[checks.positive_data_acceptance]
expected-statuses = {json.dumps(_NOT_MALFORMED)}
""", "--mode", "positive", "--phases", "examples,fuzzing", "--checks", "positive_data_acceptance,not_a_server_error",
                  # Gateway webhooks are valid only with the gateway's HMAC signature, which no schema can produce.
                  "--exclude-path-regex", "^/webhooks/")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_negative_cases_are_never_accepted(server, tmp_path):
    """Data the document calls invalid (a wrong type, a missing field, an unknown one, a bound
    crossed) is refused: the request schemas are no stricter than validation either."""
    _schemathesis(server, tmp_path, _EXAMPLES, "--mode", "negative", "--phases", "fuzzing",
                  "--checks", "negative_data_rejection,not_a_server_error", "--exclude-path-regex", "^/webhooks/")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_errors_or_schema_violations(server, tmp_path):
    """Examples, fuzzing and stateful sequences (ids from responses feed the next
    calls through the links above); schemathesis' warnings are shown, not hidden."""
    # Few examples per operation when fuzzing, more sequences when chaining real ids.
    report = _schemathesis(server, tmp_path, _EXAMPLES + f"""
[phases.stateful]
max-steps = 12
[phases.stateful.generation]
max-examples = {int(os.environ.get("PAYCAST_FUZZ_STATEFUL", "40"))}
""", "--phases", "examples,fuzzing,stateful",
                           "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                                       "response_schema_conformance")
    assert "failures" not in report.split("SUMMARY")[-1].lower() or " 0 failures" in report, report
    # The stateful phase ran and really chained calls (ids from responses fed later calls).
    covered = re.search(r"API Links:\s+(\d+) covered", report)
    assert covered and int(covered.group(1)) >= 5, report
