"""The OpenAPI document covers every route, and schemathesis finds no 5xx and
no response that violates it (bounded number of examples)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from config import load_settings
from tests.support import expect, skip_or_fail


def test_every_route_is_documented(server):
    from app.server import create_app

    app = create_app(types.SimpleNamespace(settings=load_settings()), "unused")
    spec = server.client().get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.websocket:
            continue  # WebSocket upgrades are described in docs/api.md, not in OpenAPI
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, f"{method} {path} is missing from /openapi.json"
    docs = server.client().get("/docs")
    expect(docs, 200)
    assert "openapi.json" in docs.text


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
# The fixed seed replays the same run everywhere; the random one explores, and is
# printed first so a failure can be replayed with PAYCAST_FUZZ_SEED=<it>.
FIXED_SEED = 7
# A request unanswered this long is a failure (schemathesis reports it as a network
# error): how lost keep-alive connections showed (docs/upstream/). The server's own
# deadline (PAYCAST_REQUEST_DEADLINE_S, 30 s) is longer, so a hang is seen here first.
REQUEST_TIMEOUT_S = 10


def _only_ast_race(report: str) -> bool:
    """Whether a schemathesis report's only trouble is CPython's ast thread race (see below)."""
    summary = report.split("SUMMARY")[-1]
    return ("AST constructor recursion depth mismatch" in report and "Network Error" not in report
            and "Runtime Error" in summary and "Failures" not in report)


def _schemathesis(server, tmp_path, config_toml: str, *args: str, seed: int = FIXED_SEED) -> str:
    """Run ``st run`` against the live server (a new merchant's key) with two workers.

    Returns:
      Its report (stdout), printed too; the run failed on any network error (a request
      left without an answer) before its exit code is looked at, so a hang is named as one.
    """
    st = shutil.which("st", path=os.path.dirname(sys.executable))
    if st is None:
        skip_or_fail("schemathesis is not installed")
    api_key = server.create_merchant("fuzzed")
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(_guided(_with_links(server.client().get("/openapi.json").json()))))
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_toml)
    for attempt in (1, 2):
        started = time.monotonic()
        result = subprocess.run(
            [st, "--config-file", str(config), "run", str(schema), "--url", server.url, "--workers", "2",
             "--seed", str(seed), "--no-color", "--generation-database", "none",
             "--header", f"Authorization: Bearer {api_key}", "--request-timeout", str(REQUEST_TIMEOUT_S),
             "--exclude-path", "/admin/merchants",
             "--exclude-path-regex", "^/admin/inbox", "--exclude-path", "/debug/tasks", "--suppress-health-check", "all",
             # Valid credentials are tried against the gateway, which this session's server cannot
             # reach: the answer is the documented 503 connector_unavailable, a 5xx to the checks.
             # tests/e2e/test_connector_accounts.py covers it against the stand-ins.
             "--exclude-operation-id", "post__v1_connector_accounts",
             *args],
            capture_output=True, text=True, timeout=560,
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("schemathesis_hooks.py"))},
        )
        # CPython 3.11's ast conversion is not thread-safe (python/cpython#106905); the hooks
        # module serialises ast.parse in the st process. Should the race still show (a parse
        # outside ast.parse), the run is repeated once with the same seed; any other error,
        # and any network error, stands.
        if attempt == 1 and _only_ast_race(result.stdout):
            print(f"schemathesis seed {seed}: repeated after CPython's ast race (cpython#106905)")
            continue
        break
    report = result.stdout[-12000:]
    print(report)  # warnings and coverage land in the test output
    print(f"schemathesis seed {seed}: {time.monotonic() - started:.1f} s")
    summary = report.split("SUMMARY")[-1]
    assert "Network Error" not in report, f"seed {seed}: {report}"
    assert "errored" not in summary, f"seed {seed}: {report}"
    assert result.returncode == 0, f"seed {seed}: {report}"
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
@pytest.mark.parametrize("seed", ["fixed", "random"])
def test_schemathesis_finds_no_server_errors_or_schema_violations(server, tmp_path, seed):
    """All phases (examples, coverage, fuzzing, stateful) with two workers, as a user would
    run it: no 5xx, no response that violates the document, and no request left without
    an answer. Stateful sequences chain ids from responses through the links above;
    schemathesis' warnings are shown, not hidden."""
    seed_value = FIXED_SEED if seed == "fixed" else int(
        os.environ.get("PAYCAST_FUZZ_SEED") or random.SystemRandom().randrange(2**63))
    print(f"schemathesis seed: {seed_value} ({seed})")
    # Few examples per operation when fuzzing, more sequences when chaining real ids.
    report = _schemathesis(server, tmp_path, _EXAMPLES + f"""
[phases.stateful]
max-steps = 12
[phases.stateful.generation]
max-examples = {int(os.environ.get("PAYCAST_FUZZ_STATEFUL", "25"))}
""", "--phases", "examples,coverage,fuzzing,stateful",
                           "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                                       "response_schema_conformance", seed=seed_value)
    assert "failures" not in report.split("SUMMARY")[-1].lower() or " 0 failures" in report, report
    # The stateful phase ran and really chained calls (ids from responses fed later calls).
    covered = re.search(r"API Links:\s+(\d+) covered", report)
    assert covered, report
    assert int(covered.group(1)) >= 5, report
