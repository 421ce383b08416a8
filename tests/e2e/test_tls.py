"""TLS: with PAYCAST_TLS_CERTFILE/KEYFILE the server speaks HTTPS and WSS only
(certificate from a throwaway CA made by trustme)."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest
import trio
import trustme
from trio_websocket import open_websocket_url

from tests.support import ADMIN_TOKEN, UPI, ServerProcess, expect, payment_body, wait_for


@pytest.fixture(scope="module")
def tls_server(new_database, tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile, cafile = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(certfile), append=True)
    ca.cert_pem.write_to_path(str(cafile))
    proc = ServerProcess(new_database("paycast_tls"), PAYCAST_TLS_CERTFILE=str(certfile),
                         PAYCAST_TLS_KEYFILE=str(keyfile)).start()
    proc.cafile = str(cafile)
    yield proc
    proc.stop()


def test_https_only_with_a_trusted_certificate(tls_server):
    assert tls_server.url.startswith("https://")
    verify = ssl.create_default_context(cafile=tls_server.cafile)
    with httpx.Client(base_url=tls_server.url, verify=verify, timeout=20) as anon:
        expect(anon.get("/healthz"), 200)
        api_key = anon.post("/admin/merchants", json={"name": "tls"},
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["api_key"]
    with httpx.Client(base_url=tls_server.url, verify=verify, timeout=20,
                      headers={"Authorization": f"Bearer {api_key}"}) as c:
        # The simulators' webhooks come back over HTTPS too.
        pay = c.post("/v1/payments", json=payment_body(method=UPI("success@upi"), confirm=True)).json()
        assert pay["status"] == "processing"
        wait_for(lambda: c.get(f"/v1/payments/{pay['id']}").json()["status"] == "succeeded")
    # Not trusted without the CA; plain HTTP is not spoken at all.
    with pytest.raises(httpx.ConnectError):
        httpx.get(tls_server.url + "/healthz", timeout=5)
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(tls_server.url.replace("https://", "http://") + "/healthz", timeout=5)
        assert r.status_code >= 400  # hypercorn may answer a plain request with an error page
        raise httpx.HTTPError("answered over plain HTTP")


def test_wss_realtime(tls_server):
    verify = ssl.create_default_context(cafile=tls_server.cafile)
    with httpx.Client(base_url=tls_server.url, verify=verify, timeout=20) as anon:
        api_key = anon.post("/admin/merchants", json={"name": "tls-ws"},
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["api_key"]
        token = anon.post("/v1/realtime/tokens", json={"client_id": "cus_tls"},
                          headers={"Authorization": f"Bearer {api_key}"}).json()["token"]

    async def main() -> dict:
        url = tls_server.url.replace("https://", "wss://") + f"/v1/realtime?token={token}"
        with trio.fail_after(15):
            async with open_websocket_url(url, ssl_context=verify) as ws:
                return json.loads(await ws.get_message())

    assert trio.run(main)["type"] == "welcome"
