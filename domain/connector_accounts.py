"""Merchants' connector accounts (``mca_…``), sans-IO: what a request may say,
how credentials are masked, and the API form.

The credentials themselves are stored sealed (storage/secrets_box.py) and
never rendered: a read shows :func:`mask` of the identifying key only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from domain.errors import InvalidRequest
from domain.render import iso

# The real connectors, and the credential fields each takes (the connector
# classes declare the same tuple as ``credential_fields``; the component checks).
CREDENTIAL_FIELDS: dict[str, tuple[str, ...]] = {
    "stripe": ("secret_key",),
    "razorpay": ("key_id", "key_secret"),
}
REAL_CONNECTORS = frozenset(CREDENTIAL_FIELDS)
# Which credential is shown masked on reads; the others are never shown.
MASKED_FIELD = {"stripe": "secret_key", "razorpay": "key_id"}
# The documented key forms (a typo is caught before the gateway is asked).
CREDENTIAL_PREFIXES = {
    ("stripe", "secret_key"): ("sk_test_", "sk_live_", "rk_test_", "rk_live_"),
    ("razorpay", "key_id"): ("rzp_test_", "rzp_live_"),
}
MAX_SECRET_LENGTH = 512
MAX_LABEL_LENGTH = 200
CREATE_FIELDS = frozenset({"connector", "credentials", "webhook_secret", "label"})
UPDATE_FIELDS = frozenset({"credentials", "webhook_secret", "label"})


@dataclass(frozen=True)
class AccountChange:
    """A validated create or update request (fields absent from an update are None).

    ``label`` is ``...`` (Ellipsis) when an update leaves it as it is (None clears it).
    """

    connector: str | None
    credentials: dict[str, str] | None
    webhook_secret: str | None
    label: object


def mask(connector: str, credentials: Mapping[str, str]) -> dict[str, str]:
    """The masked credentials of the contract: the shown key's prefix up to its
    last ``_`` and its last 4 characters (``sk_test_…4242``); other fields are left out.

    A key too short to keep 4 characters hidden shows its prefix only.
    """
    field = MASKED_FIELD[connector]
    key = credentials[field]
    prefix = key[: key.rfind("_") + 1]
    rest = key[len(prefix):]
    tail = rest[-4:] if len(rest) >= 12 else ""
    return {field: f"{prefix}…{tail}"}


def parse_create(data: object) -> AccountChange:
    """Validate ``POST /v1/connector_accounts``.

    Raises:
      InvalidRequest: naming the bad or missing field (never echoing a secret).
    """
    body = _object(data, CREATE_FIELDS)
    connector = body.get("connector")
    if connector is None:
        raise InvalidRequest("Missing required param: connector.", param="connector", code="parameter_missing")
    if not isinstance(connector, str) or connector not in REAL_CONNECTORS:
        raise InvalidRequest(f"connector must be one of {', '.join(sorted(REAL_CONNECTORS))}.", param="connector")
    if body.get("credentials") is None:
        raise InvalidRequest("Missing required param: credentials.", param="credentials", code="parameter_missing")
    if body.get("webhook_secret") is None:
        raise InvalidRequest("Missing required param: webhook_secret.", param="webhook_secret",
                             code="parameter_missing")
    return AccountChange(connector, _credentials(connector, body["credentials"]),
                         _secret(body["webhook_secret"], "webhook_secret"), _label(body.get("label")))


def parse_update(connector: str, data: object) -> AccountChange:
    """Validate ``POST /v1/connector_accounts/{id}`` for an account of ``connector``.

    Raises:
      InvalidRequest: naming the bad field.
    """
    body = _object(data, UPDATE_FIELDS)
    credentials = body.get("credentials")
    secret = body.get("webhook_secret")
    return AccountChange(
        None,
        None if credentials is None else _credentials(connector, credentials),
        None if secret is None else _secret(secret, "webhook_secret"),
        _label(body["label"]) if "label" in body else ...,
    )


def render(row: Mapping) -> dict:
    """The API form of a stored account (masked credentials, never a secret)."""
    return {
        "id": row["id"],
        "object": "connector_account",
        "connector": row["connector"],
        "label": row["label"],
        "status": row["status"],
        "livemode": row["livemode"],
        "credentials": dict(row["credentials_mask"]),
        "webhook_path": webhook_path(row["connector"], row["id"]),
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def webhook_path(connector: str, account_id: str) -> str:
    """Where the gateway sends this account's webhooks."""
    return f"/webhooks/{connector}/{account_id}"


def _object(data: object, allowed: frozenset[str]) -> dict:
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidRequest(f"Received unknown parameter: {unknown[0]}", param=unknown[0], code="parameter_unknown")
    return data


def _credentials(connector: str, value: object) -> dict[str, str]:
    fields = CREDENTIAL_FIELDS[connector]
    if not isinstance(value, dict):
        raise InvalidRequest(f"credentials must be an object with {', '.join(fields)}.", param="credentials")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise InvalidRequest(f"Received unknown parameter: credentials.{unknown[0]}",
                             param=f"credentials.{unknown[0]}", code="parameter_unknown")
    out = {}
    for field in fields:
        param = f"credentials.{field}"
        if value.get(field) is None:
            raise InvalidRequest(f"Missing required param: {param}.", param=param, code="parameter_missing")
        out[field] = _secret(value[field], param)
        prefixes = CREDENTIAL_PREFIXES.get((connector, field))
        if prefixes and not out[field].startswith(prefixes):
            raise InvalidRequest(f"{param} must start with {' or '.join(prefixes)}.", param=param)
    return out


def _secret(value: object, param: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{param} must be a non-empty string.", param=param)
    if len(value) > MAX_SECRET_LENGTH or any(c.isspace() for c in value):
        raise InvalidRequest(f"{param} must be at most {MAX_SECRET_LENGTH} characters, without spaces.", param=param)
    return value


def _label(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > MAX_LABEL_LENGTH):
        raise InvalidRequest(f"label must be a string of at most {MAX_LABEL_LENGTH} characters.", param="label")
    return value
