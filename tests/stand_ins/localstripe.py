"""localstripe (PyPI ``localstripe==1.15.10``), a stateful fake Stripe server written by
others, run as a real Stripe stand-in for the tests.

It is GPL-3.0, so it is never imported here: it runs as its own process
(``python -m localstripe``) from its own virtual environment, ``.venv-localstripe``
at the repository root, which ``make test`` creates and :func:`ensure_installed`
creates too when missing (a bare ``pytest`` run, a fresh clone). Paycast talks to
it over HTTP only, as to Stripe.

What localstripe 1.15.10 does (read from its source):

- any ``sk_…`` key is accepted (Basic or Bearer); ``rk_…`` keys and no key are 401;
- ``POST /_config/webhooks/{id}`` ``url``, ``secret`` (and ``events``) registers a
  webhook; every event goes to every registered webhook, signed
  ``Stripe-Signature: t=<created>,v1=<hex HMAC-SHA256 of "{t}.{body}">``, one
  second after it happened; it sends only ``payment_intent.succeeded`` and
  ``payment_intent.payment_failed`` of the types Paycast applies;
- PaymentIntent create takes only ``amount, currency, customer, payment_method,
  metadata, payment_method_types, capture_method, payment_method_options,
  confirm, off_session`` (+ ``expand``): ``return_url`` is refused (400);
- ``Idempotency-Key`` is ignored (a replayed create makes a second PaymentIntent);
- test PaymentMethods ``pm_card_visa`` (4242…), ``pm_card_chargeCustomerFail``
  (4000000000000341: the charge is declined, 402 ``card_declined`` without the
  PaymentIntent in the error), ``pm_card_visa_chargeDeclined`` (…0002: declined
  only when attached to a customer, a charge succeeds); a PaymentMethod created
  from ``4000002500003155`` (and other 3-D Secure numbers) makes the confirmation
  stop in ``requires_action`` (``next_action.type = use_stripe_sdk``) until
  ``POST /v1/payment_intents/{id}/_authenticate`` ``client_secret``, ``success``;
  a failed authentication leaves ``requires_payment_method`` with
  ``last_payment_error.code = payment_intent_authentication_failure`` (and no
  webhook);
- partial capture is modelled as a capture of everything plus a refund of the rest;
- no disputes, no refund webhooks, refunds always ``succeeded`` at once;
- it pickles its store to ``/tmp/localstripe.pickle`` on every write
  (``--from-scratch``: never read back).
"""

from __future__ import annotations

import fcntl
import pathlib
import socket
import subprocess
import sys
import time

import httpx
from tests.support import expect

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
VENV = ROOT / ".venv-localstripe"
VERSION = "1.15.10"
STAMP = VENV / f".installed-{VERSION}"
SECRET_KEY = "sk_test_paycast_localstripe"


def ensure_installed() -> pathlib.Path:
    """Create ``.venv-localstripe`` with localstripe when missing; its python.

    A file lock keeps two test sessions from building it at once.

    Raises:
      RuntimeError: the venv or the install failed (the pip output is in the message).
    """
    python = VENV / "bin" / "python"
    if STAMP.exists():
        return python
    lock_path = ROOT / ".venv-localstripe.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not STAMP.exists():
            for argv in ([sys.executable, "-m", "venv", str(VENV)],
                         [str(python), "-m", "pip", "install", "--quiet", f"localstripe=={VERSION}"]):
                done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
            STAMP.touch()
    return python


def _ipv6_bindable() -> bool:
    """Whether ``::`` can be bound (localstripe's own start-up binds it, dual-stack)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::", 0))
        return True
    except OSError:
        return False


def _command(python: pathlib.Path, port: int) -> list[str]:
    """localstripe's own entry point; on a machine without IPv6 (it binds ``::``), its
    aiohttp app served on 127.0.0.1 instead (still its own process, its own venv)."""
    if _ipv6_bindable():
        return [str(python), "-m", "localstripe", "--port", str(port), "--from-scratch"]
    return [str(python), "-c", "from aiohttp import web; from localstripe.server import app; "
                               f"web.run_app(app, host='127.0.0.1', port={port})"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalStripe:
    """One localstripe process on a free port, and the calls tests make to it
    (its own ``/_config`` routes and plain Stripe API reads), over HTTP.

    Attributes:
      url: its base address (``PAYCAST_STRIPE_API_BASE``).
      secret_key: an API key it accepts.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self._http: httpx.Client | None = None  # one client: building one costs ~0.2 s (its TLS context)
        self.url = ""
        self.secret_key = SECRET_KEY
        self.log = ROOT / "tests" / "artifacts" / "localstripe.log"

    def start(self, timeout: float = 30) -> "LocalStripe":
        """Install if needed, start, and wait (bounded) until it answers.

        Raises:
          RuntimeError: it exited or did not answer in time (it is stopped).
        """
        python = ensure_installed()
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._http = httpx.Client(base_url=self.url, auth=(self.secret_key, ""), timeout=10)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(_command(python, port), cwd=VENV, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"localstripe exited ({self.proc.returncode}); see {self.log}")
            try:
                if self.get("/v1/balance").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"localstripe did not answer within {timeout}s; see {self.log}")

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def get(self, path: str, **params) -> httpx.Response:
        return self._http.get(path, params=params)

    def post(self, path: str, data: dict | None = None) -> httpx.Response:
        """A form-encoded POST, as Stripe's API takes (nested keys already flattened: ``card[number]``)."""
        return self._http.post(path, data=data or {})

    def register_webhook(self, webhook_id: str, url: str, secret: str) -> None:
        """Send every event to ``url`` signed with ``secret`` (``/_config/webhooks/{id}``;
        the same id again replaces the registration)."""
        r = self.post(f"/_config/webhooks/{webhook_id}", {"url": url, "secret": secret})
        expect(r, 200)

    def payment_intent(self, pi_id: str) -> dict:
        r = self.get(f"/v1/payment_intents/{pi_id}")
        expect(r, 200)
        return r.json()

    def payment_intents(self) -> list[dict]:
        """Every PaymentIntent it holds (its list has no filters; pages of 100)."""
        found: list[dict] = []
        after = None
        while True:
            params = {"limit": 100, **({"starting_after": after} if after else {})}
            page = self.get("/v1/payment_intents", **params).json()
            found += page["data"]
            if not page["has_more"] or not page["data"]:
                return found
            after = page["data"][-1]["id"]

    def refunds_of(self, pi_id: str) -> list[dict]:
        r = self.get("/v1/refunds", payment_intent=pi_id)
        expect(r, 200)
        return r.json()["data"]

    def card_payment_method(self, number: str) -> str:
        """A PaymentMethod made from a test card number (what Stripe.js would send); its id."""
        r = self.post("/v1/payment_methods", {"type": "card", "card[number]": number, "card[exp_month]": "12",
                                              "card[exp_year]": "2034", "card[cvc]": "123"})
        expect(r, 200)
        return r.json()["id"]

    def authenticate(self, pi_id: str, *, success: bool) -> dict:
        """Finish (or fail) the 3-D Secure step of a PaymentIntent, as the customer's browser would."""
        pi = self.payment_intent(pi_id)
        r = self.post(f"/v1/payment_intents/{pi_id}/_authenticate",
                      {"client_secret": pi["client_secret"], "success": "true" if success else "false"})
        expect(r, 200)
        return r.json()
