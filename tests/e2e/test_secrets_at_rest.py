"""Secrets at rest (storage/secrets_box.py) against real server processes and the
real PostgreSQL: what is stored is ciphertext, plaintext left from before sealing
is sealed at start, keys rotate (first seals, any opens), a wrong key fails at
start, an external database without a key is refused, and the embedded database
gets a generated key file (0600) with one warning.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from standardwebhooks import Webhook

from storage.secrets_box import SecretsBox, context_of, parse_keys
from tests.receiver import Receiver
from tests.support import ROOT, ADMIN_TOKEN, db_fetch, expect, store_connector_account, wait_for

KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()
KEY_C = base64.b64encode(b"C" * 32).decode()


def kid(key_b64: str) -> str:
    return hashlib.sha256(base64.b64decode(key_b64)).hexdigest()[:8]


def _endpoint(client, receiver) -> dict:
    r = client.post("/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["*"]})
    expect(r, 201)
    return r.json()


def _signed_delivery_verifies(client, receiver, secret: str) -> None:
    """A payment's event reaches the receiver signed with ``secret`` (checked by the
    standardwebhooks library, not by our code)."""
    receiver.received.clear()
    r = client.post("/v1/payments", json={"amount": 1000, "currency": "INR", "confirm": True,
                                          "payment_method": {"type": "card", "card": {"number": "4242424242424242"}}})
    assert r.status_code in (200, 201), r.text
    request = wait_for(lambda: receiver.received and receiver.received[0], timeout=15)
    Webhook(secret).verify(request.body, request.headers)


def _start(start_server, dsn: str, key: str):
    return start_server(dsn, PAYCAST_SECRETS_KEY=key, PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true")


def _endpoint_stored_with(key: str, new_database, start_server, receiver) -> tuple[str, str, dict]:
    """A fresh database where a server with ``key`` stored an endpoint, then stopped.

    Returns:
      ``(dsn, api_key, endpoint as created, with its secret)``.
    """
    dsn = new_database("paycast_sec")
    server = _start(start_server, dsn, key)
    api_key = server.create_merchant()
    with server.client(api_key) as client:
        created = _endpoint(client, receiver)
    server.stop()
    return dsn, api_key, created


CREDENTIALS = {"secret_key": "sk_test_rotate_me_0000"}


def _serve_and_fail(dsn: str | None, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``run.py serve`` expecting it to refuse to start; its exit and output."""
    full = {k: v for k, v in os.environ.items() if k not in ("PAYCAST_SECRETS_KEY", "PAYCAST_DATABASE_URL")}
    full.update({"PAYCAST_PORT": "0", "PAYCAST_ADMIN_TOKEN": ADMIN_TOKEN}, **env)
    if dsn:
        full["PAYCAST_DATABASE_URL"] = dsn
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "serve"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=timeout)


def test_endpoint_secret_is_ciphertext_and_still_signs(new_database, start_server):
    dsn = new_database("paycast_sec")
    server = _start(start_server, dsn, KEY_A)
    with Receiver() as receiver, server.client(server.create_merchant()) as client:
        created = _endpoint(client, receiver)
        stored = db_fetch(dsn, "SELECT secret FROM webhook_endpoints WHERE id = $1", created["id"])[0]["secret"]
        assert stored != created["secret"]
        assert created["secret"] not in stored
        assert stored.startswith(f"pcs1.{kid(KEY_A)}.")
        assert "secret" not in client.get(f"/v1/webhook_endpoints/{created['id']}").json()
        _signed_delivery_verifies(client, receiver, created["secret"])


def test_plaintext_from_before_is_sealed_at_start(new_database, start_server):
    """The data migration: an endpoint secret stored in plaintext (as before
    sealing existed) is sealed at the next start and still signs."""
    with Receiver() as receiver:
        dsn, api_key, created = _endpoint_stored_with(KEY_A, new_database, start_server, receiver)
        db_fetch(dsn, "UPDATE webhook_endpoints SET secret = $2 WHERE id = $1", created["id"], created["secret"])
        server = _start(start_server, dsn, KEY_A)
        stored = db_fetch(dsn, "SELECT secret FROM webhook_endpoints WHERE id = $1", created["id"])[0]["secret"]
        assert stored.startswith(f"pcs1.{kid(KEY_A)}.")
        assert created["secret"] not in stored
        with server.client(api_key) as client:
            _signed_delivery_verifies(client, receiver, created["secret"])


def test_rotation_reads_old_rows_and_seals_with_the_new_key(new_database, start_server):
    with Receiver() as receiver:
        dsn, api_key, old = _endpoint_stored_with(KEY_A, new_database, start_server, receiver)
        merchant_id = db_fetch(dsn, "SELECT id FROM merchants LIMIT 1")[0]["id"]
        mca_id = store_connector_account(dsn, merchant_id, key=KEY_A, credentials=CREDENTIALS,
                                         webhook_secret="whsec_rotate_me")
        # B first (seals), A still listed (opens what A sealed): start re-seals A's rows with B.
        server = _start(start_server, dsn, f"{KEY_B},{KEY_A}")
        rows = db_fetch(dsn, "SELECT secret FROM webhook_endpoints")
        assert rows
        assert all(r["secret"].startswith(f"pcs1.{kid(KEY_B)}.") for r in rows)
        account = db_fetch(dsn, "SELECT * FROM connector_accounts WHERE id = $1", mca_id)[0]
        only_b = SecretsBox(parse_keys(KEY_B))
        assert only_b.open_json(account["credentials_sealed"],
                                context_of("connector_accounts", "credentials_sealed", mca_id)) == CREDENTIALS
        assert only_b.open(account["webhook_secret_sealed"],
                           context_of("connector_accounts", "webhook_secret_sealed", mca_id)) == "whsec_rotate_me"
        with server.client(api_key) as client:
            new = _endpoint(client, receiver)
            assert db_fetch(dsn, "SELECT secret FROM webhook_endpoints WHERE id = $1",
                            new["id"])[0]["secret"].startswith(f"pcs1.{kid(KEY_B)}.")
            client.delete(f"/v1/webhook_endpoints/{new['id']}")
            _signed_delivery_verifies(client, receiver, old["secret"])
        server.stop()
        # A is gone from the ring: everything was re-sealed with B, so B alone opens it all.
        server = _start(start_server, dsn, KEY_B)
        with server.client(api_key) as client:
            _signed_delivery_verifies(client, receiver, old["secret"])


def _token_connects(server, tok: str) -> None:
    """A WebSocket opened with ``tok`` is welcomed (the server verified the token with its key)."""
    import trio

    from tests.realtime_support import connect, welcome

    async def main() -> None:
        async with connect(server, tok) as ws:
            await welcome(ws)

    trio.run(main)


def test_realtime_token_key_is_sealed_and_plaintext_from_before_is_sealed_at_start(new_database, start_server):
    """The key that signs realtime tokens is a secret at rest like the others: stored sealed,
    sealed at start when an older version left it in plaintext, re-sealed on rotation, and
    tokens signed before any of that still connect."""
    dsn = new_database("paycast_sec")
    server = _start(start_server, dsn, KEY_A)
    api_key = server.create_merchant()
    with server.client(api_key) as client:
        r = client.post("/v1/realtime/tokens", json={"client_id": "cus_sealed"})
        expect(r, 201)
        tok = r.json()["token"]
    context = context_of("paycast_secrets", "value", "realtime_token_key")
    stored = db_fetch(dsn, "SELECT value FROM paycast_secrets WHERE name = 'realtime_token_key'")[0]["value"]
    assert stored.startswith(f"pcs1.{kid(KEY_A)}.")
    plaintext = SecretsBox(parse_keys(KEY_A)).open(stored, context)
    assert plaintext not in stored
    server.stop()
    # As an older version stored it; B seals now, A still opens.
    db_fetch(dsn, "UPDATE paycast_secrets SET value = $1 WHERE name = 'realtime_token_key'", plaintext)
    server = _start(start_server, dsn, f"{KEY_B},{KEY_A}")
    stored = db_fetch(dsn, "SELECT value FROM paycast_secrets WHERE name = 'realtime_token_key'")[0]["value"]
    assert stored.startswith(f"pcs1.{kid(KEY_B)}.")
    assert SecretsBox(parse_keys(KEY_B)).open(stored, context) == plaintext
    _token_connects(server, tok)


def test_wrong_key_fails_at_start(new_database, start_server):
    with Receiver() as receiver:
        dsn, _, _ = _endpoint_stored_with(KEY_A, new_database, start_server, receiver)
    done = _serve_and_fail(dsn, {"PAYCAST_SECRETS_KEY": KEY_C})
    assert done.returncode == 2, done
    assert "PAYCAST_SECRETS_KEY does not open the secrets stored in this database" in done.stderr
    assert kid(KEY_A) in done.stderr
    assert "Traceback" not in done.stderr
    assert KEY_A not in done.stderr + done.stdout
    assert KEY_C not in done.stderr + done.stdout


def test_external_database_without_a_key_is_refused(new_database):
    done = _serve_and_fail(new_database("paycast_sec"), {})
    assert done.returncode == 2, done
    assert "PAYCAST_SECRETS_KEY is required with PAYCAST_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_malformed_key_is_refused_without_echoing_it(new_database):
    done = _serve_and_fail(new_database("paycast_sec"), {"PAYCAST_SECRETS_KEY": "not-a-key-but-a-secret"})
    assert done.returncode == 2, done
    assert "PAYCAST_SECRETS_KEY" in done.stderr
    assert "not-a-key-but-a-secret" not in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_embedded_database_generates_a_private_key_file():
    """No key and no PAYCAST_DATABASE_URL: a key file (0600) in the data dir, one warning;
    the second start uses the same key (the canary opens)."""
    from tests.support import ServerProcess

    data_dir = pathlib.Path(tempfile.mkdtemp(prefix="pcsec", dir="/tmp"))
    saved = os.environ.pop("PAYCAST_SECRETS_KEY", None)
    try:
        for start in range(2):
            proc = ServerProcess("", PAYCAST_DATA_DIR=str(data_dir))
            proc.start(timeout=120)
            try:
                key_file = data_dir / "secrets.key"
                assert key_file.stat().st_mode & 0o777 == 0o600
                if start == 0:
                    first_key = key_file.read_text()
                assert key_file.read_text() == first_key
                warnings = [line for line in proc.stderr_lines if "PAYCAST_SECRETS_KEY is unset" in line]
                assert len(warnings) == 1, proc.stderr_lines
                assert first_key.strip() not in "".join(proc.stderr_lines)
            finally:
                proc.stop()
            time.sleep(0.5)
    finally:
        if saved is not None:
            os.environ["PAYCAST_SECRETS_KEY"] = saved
        from pg.cluster import EmbeddedPostgres

        EmbeddedPostgres(data_dir).stop()  # whatever a failed start left behind
        shutil.rmtree(data_dir, ignore_errors=True)
