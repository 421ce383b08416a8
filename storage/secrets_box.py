"""Secrets at rest: AES-256-GCM under a key ring (``PAYCAST_SECRETS_KEY``).

What is sealed: merchants' connector credentials and connector webhook
secrets (storage/connector_accounts.py), outgoing webhook endpoint secrets
(storage/webhook_endpoints.py) and the realtime token key (storage/realtime.py). The cipher is ``cryptography``'s AESGCM, not
hand-rolled; each value gets a fresh 96-bit nonce and is bound to where it is
stored by its associated data (``webhook_endpoints.secret:we_…``), so a
ciphertext copied into another row or column does not open there.

Stored form (text, so it reads in ``psql``)::

    pcs1.<key id: 8 hex>.<base64url(nonce ‖ ciphertext ‖ tag)>

The key ring is ``PAYCAST_SECRETS_KEY``: base64 of 32 bytes, or several
comma-separated; the first key seals, any of them opens. The key id (the first
4 bytes of the key's SHA-256) says which key opens a value, and lets start-up
re-seal what an older key sealed (:func:`prepare`), so the old key can then be
removed. Without the setting, the embedded database uses a key generated into
``<data dir>/secrets.key`` (mode 0600) with one warning; an external database
refuses to start (a key kept beside a shared database is no key).

A wrong key is found at start, not by a 500 later: a canary sealed with the
ring at the first start (``paycast_secrets.secrets_box_canary``) must open.
Nothing here ever puts a key or a plaintext in a message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import pathlib
from collections.abc import Sequence

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("paycast.secrets")

PREFIX = "pcs1"
KEY_FILE = "secrets.key"
_NONCE = 12
_CANARY_NAME = "secrets_box_canary"
_CANARY_TEXT = "paycast secrets canary"
# Serialises start-up preparation among processes sharing a database.
_LOCK_KEY = 7_412_960_332
# The stored places that hold sealed values: (table, sealed column, the row's key column).
# ``paycast_secrets`` holds the deployment's own keys (the realtime token key) beside the
# canary, which start-up checks (and re-seals) first.
SEALED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("webhook_endpoints", "secret", "id"),
    ("connector_accounts", "credentials_sealed", "id"),
    ("connector_accounts", "webhook_secret_sealed", "id"),
    ("paycast_secrets", "value", "name"),
)


class SecretsKeyError(Exception):
    """The key ring is missing, malformed, or does not open what is stored.

    The message is one line for an operator; it never contains key material.
    """


def key_id(key: bytes) -> str:
    """The 8-hex-digit id of a key (first 4 bytes of its SHA-256): names it without revealing it."""
    return hashlib.sha256(key).hexdigest()[:8]


def context_of(table: str, column: str, row_id: str) -> str:
    """The associated data binding a sealed value to its row and column."""
    return f"{table}.{column}:{row_id}"


class SecretsBox:
    """Seals and opens strings with a key ring (first key seals, any opens).

    Args:
      keys: 32-byte AES keys, the sealing key first.
      source: where the keys came from, for messages (``"PAYCAST_SECRETS_KEY"``
        or the key file's path).

    Raises:
      SecretsKeyError: no key, or a key that is not 32 bytes.
    """

    def __init__(self, keys: Sequence[bytes], source: str = "PAYCAST_SECRETS_KEY") -> None:
        if not keys:
            raise SecretsKeyError(f"{source}: no key")
        if any(len(k) != 32 for k in keys):
            raise SecretsKeyError(f"{source}: every key must be 32 bytes (base64 of 32 bytes)")
        self.source = source
        self._ciphers = {key_id(k): AESGCM(k) for k in keys}
        self.current_id = key_id(keys[0])

    def __repr__(self) -> str:  # never the keys
        return f"SecretsBox(keys={self.key_ids}, source={self.source!r})"

    @property
    def key_ids(self) -> list[str]:
        """The ids of the ring's keys, the sealing one first (safe to print)."""
        return list(self._ciphers)

    def seal(self, plaintext: str, context: str) -> str:
        """Encrypt ``plaintext`` with the first key, bound to ``context``.

        Returns:
          The stored form ``pcs1.<kid>.<base64url>``.
        """
        nonce = os.urandom(_NONCE)
        sealed = self._ciphers[self.current_id].encrypt(nonce, plaintext.encode(), context.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{PREFIX}.{self.current_id}.{body}"

    def open(self, stored: str, context: str) -> str:
        """Decrypt a stored value sealed for ``context`` with any key of the ring.

        Raises:
          SecretsKeyError: not a sealed value, sealed with a key not in the
            ring, or it does not authenticate (wrong key, other row, tampered).
        """
        kid, body = self._split(stored)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise SecretsKeyError(f"a secret stored for {context.split(':')[0]} was sealed with key id {kid}, "
                                  f"which is not in {self.source}")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretsKeyError(f"a secret stored for {context.split(':')[0]} does not open with key id {kid} "
                                  "(wrong key, or the value was altered)") from None

    def seal_json(self, value: dict, context: str) -> str:
        """:meth:`seal` of a JSON object (connector credentials)."""
        return self.seal(json.dumps(value, separators=(",", ":"), sort_keys=True), context)

    def open_json(self, stored: str, context: str) -> dict:
        """:meth:`open` of a value sealed by :meth:`seal_json`."""
        return json.loads(self.open(stored, context))

    def is_current(self, stored: str) -> bool:
        """Whether ``stored`` is sealed with the first (sealing) key."""
        return is_sealed(stored) and stored.split(".", 2)[1] == self.current_id

    @staticmethod
    def _split(stored: str) -> tuple[str, str]:
        parts = stored.split(".", 2) if isinstance(stored, str) else []
        if len(parts) != 3 or parts[0] != PREFIX:
            raise SecretsKeyError("a stored secret is not in the sealed form")
        return parts[1], parts[2]


def is_sealed(value: str | None) -> bool:
    """Whether a stored value is in the sealed form (not a plaintext left from before sealing)."""
    return isinstance(value, str) and value.startswith(PREFIX + ".")


def parse_keys(value: str, source: str = "PAYCAST_SECRETS_KEY") -> list[bytes]:
    """Keys from their setting form: base64 of 32 bytes, comma-separated.

    Raises:
      SecretsKeyError: a part is not base64 of 32 bytes (its position is named, never its value).
    """
    keys = []
    for n, part in enumerate((p.strip() for p in value.split(",")), start=1):
        try:
            key = base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise SecretsKeyError(f"{source}: key {n} is not base64 of 32 bytes")
        keys.append(key)
    return keys


def new_key() -> str:
    """A fresh key in the setting's form (base64 of 32 random bytes)."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def load_box(secrets_key: str | None, *, external_database: bool, data_dir: pathlib.Path) -> SecretsBox:
    """The process's key ring, from the setting or (embedded database only) the key file.

    Args:
      secrets_key: ``PAYCAST_SECRETS_KEY`` (None when unset).
      external_database: ``PAYCAST_DATABASE_URL`` is set.
      data_dir: ``PAYCAST_DATA_DIR`` (where the embedded database's key file lives).

    Returns:
      The box. With the key file, one warning is logged.

    Raises:
      SecretsKeyError: no key for an external database, or a malformed key or key file.
    """
    if secrets_key:
        return SecretsBox(parse_keys(secrets_key))
    if external_database:
        raise SecretsKeyError(
            "PAYCAST_SECRETS_KEY is required with PAYCAST_DATABASE_URL: secrets are stored encrypted and the key "
            "must not live beside a shared database. Generate one with: "
            "python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())'")
    path = data_dir / KEY_FILE
    generated = _ensure_key_file(path)
    log.warning("PAYCAST_SECRETS_KEY is unset: secrets at rest are encrypted with the key %s %s (mode 0600); "
                "set PAYCAST_SECRETS_KEY in production", "generated into" if generated else "in", path)
    return SecretsBox(parse_keys(path.read_text().strip(), source=str(path)), source=str(path))


def _ensure_key_file(path: pathlib.Path) -> bool:
    """Create the key file with a fresh key unless it exists; True when created now.

    Written to a private temporary file then linked into place, so a process
    starting at the same moment sees either no file or a whole one (the
    link fails for the loser, which then reads the winner's key).
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (new_key() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


async def prepare(conn: asyncpg.Connection, box: SecretsBox) -> dict[str, int]:
    """Start-up check and data migration of secrets at rest (a unit of work).

    1. The canary: sealed at the first start; it must open with the ring now,
       or this process refuses to start (wrong key).
    2. Plaintext outgoing endpoint secrets and a plaintext realtime token key
       (stored before sealing existed, or by an older version during a rolling
       upgrade) are sealed.
    3. Values sealed with an older key of the ring are re-sealed with the
       first one, so the old key can be dropped after one start.

    One transaction under an advisory lock, so processes starting together
    take turns (the later ones find nothing left to do).

    Returns:
      Counts ``{"sealed": n, "resealed": n}`` of rows written.

    Raises:
      SecretsKeyError: the canary (or a stored value) does not open with the ring.
    """
    counts = {"sealed": 0, "resealed": 0}
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await _check_canary(conn, box, counts)
        for table, column, key in SEALED_COLUMNS:
            await _seal_column(conn, box, table, column, key, counts)
    if counts["sealed"] or counts["resealed"]:
        log.info("secrets at rest: %d sealed, %d re-sealed with key id %s",
                 counts["sealed"], counts["resealed"], box.current_id)
    return counts


async def _check_canary(conn: asyncpg.Connection, box: SecretsBox, counts: dict[str, int]) -> None:
    context = context_of("paycast_secrets", "value", _CANARY_NAME)
    stored = await conn.fetchval("SELECT value FROM paycast_secrets WHERE name = $1", _CANARY_NAME)
    if stored is None:
        await conn.execute("INSERT INTO paycast_secrets (name, value) VALUES ($1, $2)",
                           _CANARY_NAME, box.seal(_CANARY_TEXT, context))
        return
    try:
        ok = box.open(stored, context) == _CANARY_TEXT
    except SecretsKeyError:
        ok = False
    if not ok:
        kid = stored.split(".", 2)[1] if is_sealed(stored) else "?"
        raise SecretsKeyError(
            f"{box.source} does not open the secrets stored in this database (they were sealed with key id {kid}; "
            f"the ring has {', '.join(box.key_ids)}). Give the key they were sealed with, or list it after a new "
            "one to rotate.")
    if not box.is_current(stored):
        await conn.execute("UPDATE paycast_secrets SET value = $2 WHERE name = $1",
                           _CANARY_NAME, box.seal(_CANARY_TEXT, context))
        counts["resealed"] += 1


async def _seal_column(conn: asyncpg.Connection, box: SecretsBox, table: str, column: str, key: str,
                       counts: dict[str, int]) -> None:
    """Seal plaintexts and re-seal old-key values of one column: one read, one write.

    The write is guarded by each row's value as read, so a row changed meanwhile
    (impossible under the lock, but cheap to say) keeps its newer value.
    """
    # Table and column names come from SEALED_COLUMNS above, never from input.
    rows = await conn.fetch(
        f"SELECT {key} AS id, {column} AS value FROM {table}"
        f" WHERE {column} IS NOT NULL AND {column} NOT LIKE $1",
        f"{PREFIX}.{box.current_id}.%",
    )
    if not rows:
        return
    ids, old, new = [], [], []
    for row in rows:
        context = context_of(table, column, row["id"])
        if is_sealed(row["value"]):
            plaintext = box.open(row["value"], context)
            counts["resealed"] += 1
        else:
            plaintext = row["value"]
            counts["sealed"] += 1
        ids.append(row["id"])
        old.append(row["value"])
        new.append(box.seal(plaintext, context))
    await conn.execute(
        f"UPDATE {table} t SET {column} = v.new FROM unnest($1::text[], $2::text[], $3::text[]) AS v(id, old, new)"
        f" WHERE t.{key} = v.id AND t.{column} = v.old",
        ids, old, new,
    )
