"""Settings read from the environment (prefix ``PAYCAST_``).

A bad value fails fast with one readable line naming the variable, because the
person reading it is usually deploying at a bad hour.
"""

from __future__ import annotations

import base64
import binascii
import pathlib
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.roles import Role

DEFAULT_RETRY_SCHEDULE = "0,5,300,1800,7200,18000,36000,50400,72000,86400"
DEFAULT_INBOX_RETRY_SCHEDULE = "1,5,30,300,1800"
DEFAULT_CONNECTOR_SECRETS = "mockstripe=whsec_dev_mockstripe,mockrazorpay=dev_mockrazorpay,flaky=whsec_dev_flaky"
# Settings whose value is a secret: an error message names them, never shows them.
SECRET_FIELDS = frozenset({"secrets_key", "admin_token", "realtime_secret", "connector_secrets"})


class SettingsError(Exception):
    """A setting in the environment is invalid; the message is one line naming it."""


class Settings(BaseSettings):
    """Every knob of a Paycast process. Field ``x`` is read from ``PAYCAST_X``."""

    model_config = SettingsConfigDict(env_prefix="PAYCAST_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: pathlib.Path = pathlib.Path("./var")
    database_url: str | None = None
    admin_token: str | None = None
    # Process role (config/roles.py): all | api | realtime | worker.
    role: Role = Role.ALL

    # Database: a statement never runs longer than this, so a unit of work (which
    # is never cancelled half way) is bounded too.
    db_statement_timeout_ms: int = Field(5000, ge=100)
    db_pool_size: int = Field(10, ge=1, le=100)
    db_connect_timeout_s: float = Field(2.0, gt=0)

    # Actors.
    ask_timeout_s: float = Field(10.0, gt=0)
    actor_idle_s: float = Field(30.0, gt=0)
    actor_inbox_size: int = Field(64, ge=1)

    # HTTP edge.
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Per API key. Generous by default (the bench drives one key hard); 0 disables.
    rate_limit_rps: float = Field(1000.0, ge=0)
    rate_limit_burst: int = Field(2000, ge=1)
    graceful_timeout_s: float = Field(5.0, ge=0)
    # Server time a request may take before it is answered 503 and its connection
    # closed (app/deadline.py); 0 turns the guard off. Time spent waiting for the
    # client's body is not counted. 30 s is three times the longest wait a handler
    # makes by design (ask_timeout_s, 10 s; a connector call is bounded by
    # connector_timeout_s and a statement by db_statement_timeout_ms, both below it).
    request_deadline_s: float = Field(30.0, ge=0)
    # The merchant's hot POSTs (create, confirm, capture, cancel, refund) served at the ASGI
    # level in front of Quart (app/merchant_endpoint.py). false serves them through Quart as
    # every other route: the same answers at more CPU per request; for a side-by-side
    # benchmark, and a way back should the endpoint ever misbehave.
    merchant_posts_at_asgi: bool = True
    # TLS: both set → the server speaks HTTPS and WSS only (hypercorn's certfile/keyfile).
    tls_certfile: pathlib.Path | None = None
    tls_keyfile: pathlib.Path | None = None
    # `run.py serve --workers N`: N full processes on one port (SO_REUSEPORT), supervised
    # by a parent (processes/workers.py). reuse_port binds with SO_REUSEPORT; the parent sets
    # it for its workers, and it lets independent processes share a port too.
    workers: int = Field(1, ge=1, le=64)
    reuse_port: bool = False

    # Payments and connectors.
    processing_deadline_s: float = Field(60.0, gt=0)
    reconcile_max_checks: int = Field(5, ge=1)
    reconcile_interval_s: float = Field(1.0, gt=0)
    # How often actor:rollups looks for events its console rollups do not include yet.
    rollup_interval_s: float = Field(0.25, gt=0)
    connector_timeout_s: float = Field(5.0, gt=0)
    flaky_error_rate: float = Field(0.3, ge=0, le=1)
    # Circuit breaker per connector: opens when at least this share of the
    # recent calls (once there are min_calls of them) failed; probes after open_s.
    breaker_failure_threshold: float = Field(0.5, gt=0, le=1)
    breaker_min_calls: int = Field(10, ge=1)
    breaker_open_s: float = Field(10.0, gt=0)
    connector_secrets: str = DEFAULT_CONNECTOR_SECRETS
    # Real connectors (merchants' own Stripe/Razorpay accounts). Unset base URL →
    # the gateway's public API; tests point them at localstripe and the fake Razorpay.
    stripe_api_base: str | None = None
    razorpay_api_base: str | None = None
    # A payment left in requires_action this long is asked at the gateway and,
    # if still waiting, canceled there (cancellation_reason "abandoned").
    action_deadline_s: float = Field(3600.0, gt=0)
    # Secrets at rest (storage/secrets_box.py): base64 of 32 bytes, or a
    # comma-separated list (the first encrypts, any decrypts). Unset with the
    # embedded database → a generated key file in the data dir; unset with
    # PAYCAST_DATABASE_URL → the server refuses to start.
    secrets_key: str | None = Field(None, repr=False)

    # A gateway webhook for a payment not in the database yet is retried this
    # long (it may have overtaken the payment's commit) before it is kept
    # aside as unmatched for review.
    webhook_unmatched_grace_s: float = Field(30.0, ge=0)
    # A stored gateway webhook whose apply fails is retried after these delays
    # (seconds); when they are spent it is a dead letter (status `dead`).
    inbox_retry_schedule: str = DEFAULT_INBOX_RETRY_SCHEDULE

    # Outgoing webhooks.
    webhook_retry_schedule: str = DEFAULT_RETRY_SCHEDULE
    # Off by default: endpoint URLs must be https and resolve to public
    # addresses (checked at registration and at every send). Turn on for local
    # development receivers (http://127.0.0.1:…).
    webhook_allow_private_urls: bool = False

    # Simulator of gateway webhooks.
    sim_delay_ms: int = Field(50, ge=0)
    sim_duplicate_rate: float = Field(0.0, ge=0, le=1)
    sim_reorder: bool = False
    # Where the simulators send their webhooks (an ``api`` process's base URL).
    # Unset: this process's own URL, right for roles that serve /webhooks.
    sim_webhook_url: str | None = None

    # Realtime gateway. The token key: unset → a random key stored in the
    # database on first use, so every process sharing the database agrees.
    realtime_secret: str | None = Field(None, min_length=16)
    # Frames waiting to be written to one WebSocket; beyond it the connection
    # catches up from the database, and if it stays full it is closed (1013).
    realtime_queue_size: int = Field(256, ge=1, le=100_000)
    realtime_slow_consumer_s: float = Field(5.0, ge=0)
    realtime_ping_s: float = Field(20.0, gt=0)
    realtime_idle_timeout_s: float = Field(60.0, gt=0)
    realtime_max_frame_bytes: int = Field(4096, ge=64, le=1024 * 1024)
    # How often the LISTEN connection is checked (loss is also noticed at once
    # when the server closes it).
    realtime_listener_check_s: float = Field(5.0, gt=0)
    realtime_presence_ttl_s: float = Field(30.0, gt=0)
    realtime_retention_s: float = Field(7 * 86400.0, gt=0)
    # Device acks are written in one batch this often (and when a device
    # connects or leaves, and at shutdown), never once per ack.
    realtime_ack_flush_s: float = Field(1.0, gt=0)

    # Bounded tables (storage/partitions.py): how long rows are kept, in days;
    # 0 keeps them for ever. The inbox's retention is also its dedup window
    # (a gateway's repeat of an event older than that is stored again). Realtime
    # messages are kept for ``realtime_retention_s``.
    retention_events_days: int = Field(0, ge=0)
    retention_inbox_days: int = Field(30, ge=0)
    retention_webhook_attempts_days: int = Field(30, ge=0)
    # Partitions made ahead of time, in periods of each table.
    partitions_ahead: int = Field(3, ge=1, le=60)
    partition_maintenance_s: float = Field(3600.0, gt=0)

    # Garbage collector: freeze what start-up allocated, collect by count less
    # often, and collect the young generation every 100 ms (actors/collector.py),
    # so no collection is a long pause. See bench/RESULTS.md.
    gc_tuning: bool = True
    # With gc_tuning: every 2 s, freeze what survived (actors/collector.py), so a
    # full collection does not walk the held connections (issue 22).
    gc_freeze: bool = True
    trace_tasks: bool = False
    # OpenTelemetry: none (no SDK; an incoming traceparent still passes through),
    # console (spans as JSON on stdout) or otlp (OTEL_EXPORTER_OTLP_* variables).
    otel_exporter: Literal["none", "console", "otlp"] = "none"
    log_level: str = "INFO"

    @field_validator("webhook_retry_schedule", "inbox_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts or any(not p.isdigit() for p in parts):
            raise ValueError("must be comma-separated whole seconds, e.g. 0,5,300")
        return ",".join(parts)

    @model_validator(mode="after")
    def _tls_pair(self) -> "Settings":
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            missing = "tls_keyfile" if self.tls_keyfile is None else "tls_certfile"
            raise ValueError(f"PAYCAST_{missing.upper()} must be set too (TLS needs both the certificate and its key)")
        for path in (self.tls_certfile, self.tls_keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self

    @field_validator("connector_secrets")
    @classmethod
    def _secrets(cls, value: str) -> str:
        for item in filter(None, (p.strip() for p in value.split(","))):
            name, sep, secret = item.partition("=")
            if not sep or not name or not secret:
                raise ValueError("must look like mockstripe=secret,mockrazorpay=secret")
        return value

    @field_validator("secrets_key")
    @classmethod
    def _secrets_key(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for part in (p.strip() for p in value.split(",")):
            try:
                raw = base64.b64decode(part, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                # The message names the position, never the value (it is a secret).
                raise ValueError("must be base64 of 32 bytes (comma-separated to rotate keys)")
        return value

    @property
    def retry_schedule(self) -> list[int]:
        """The outgoing-webhook retry delays in seconds."""
        return [int(p) for p in self.webhook_retry_schedule.split(",")]

    @property
    def inbox_retry_delays(self) -> list[int]:
        """The incoming-webhook apply retry delays in seconds."""
        return [int(p) for p in self.inbox_retry_schedule.split(",")]

    @property
    def secrets_by_connector(self) -> dict[str, str]:
        """Webhook signing secret per connector, defaults overlaid with the setting."""
        out: dict[str, str] = {}
        for source in (DEFAULT_CONNECTOR_SECRETS, self.connector_secrets):
            for item in filter(None, (p.strip() for p in source.split(","))):
                name, _, secret = item.partition("=")
                out[name.strip()] = secret.strip()
        return out


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment.

    Args:
      **overrides: values that win over the environment (tests, CLI flags).

    Returns:
      The validated settings.

    Raises:
      SettingsError: one line naming the first bad ``PAYCAST_*`` variable.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a check across fields: its message names them
            raise SettingsError(f"invalid settings: {err['msg'].removeprefix('Value error, ')}") from None
        field = str(err["loc"][0])
        shown = "<redacted>" if field in SECRET_FIELDS else repr(err.get("input"))
        raise SettingsError(f"invalid setting PAYCAST_{field.upper()}={shown}: {err['msg']}") from None
