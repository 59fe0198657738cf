"""How to reach the shared Redis: URL, TLS and credentials (never on the command line in clear)."""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass

PASSWORD_ENV = "EXTAUTHZ_REDIS_PASSWORD"
USERNAME_ENV = "EXTAUTHZ_REDIS_USERNAME"


class SharedConfigError(ValueError):
    """A Redis setting that cannot work: refused at start, with what to fix."""


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str                      # redis:// or rediss://, without credentials once resolved
    prefix: str = "mcp-extauthz"  # one per release: two releases on one Redis never share keys
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None    # rediss://: verify the server against this CA bundle
    cert_file: str | None = None  # rediss:// with client certificates
    key_file: str | None = None
    timeout: float = 0.25         # seconds a claim waits for Redis before the policy's fallback
    claim_connections: int = 32   # claims in flight at once, each on its own pooled connection; the rest
    #                               wait for one within their budget (redis.RedisShared.claim)

    @property
    def tls(self) -> bool:
        return self.url.startswith("rediss://")

    def redacted(self) -> str:
        p = urllib.parse.urlsplit(self.url)
        return f"{p.scheme}://{p.hostname}:{p.port or 6379}{p.path} (prefix {self.prefix})"


def redis_config(url: str, *, prefix: str | None = None, password_file: str | None = None,
                 ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                 timeout: float = 0.25) -> RedisConfig:
    """Credentials come from the URL, else `password_file`, else $EXTAUTHZ_REDIS_PASSWORD (and
    $EXTAUTHZ_REDIS_USERNAME for an ACL user): a Secret mounted as a file or an env var."""
    p = urllib.parse.urlsplit(url)
    if p.scheme not in ("redis", "rediss"):
        raise SharedConfigError(f"--redis must be a redis:// or rediss:// URL, not {p.scheme or url!r}")
    if not p.hostname:
        raise SharedConfigError("--redis URL has no host")
    if (ca_file or cert_file or key_file) and p.scheme != "rediss":
        raise SharedConfigError("TLS options need a rediss:// URL")
    if bool(cert_file) != bool(key_file):
        raise SharedConfigError("--redis-cert and --redis-key go together")
    for f in (ca_file, cert_file, key_file, password_file):
        if f and not os.path.isfile(f):
            raise SharedConfigError(f"{f}: no such file")
    username = urllib.parse.unquote(p.username) if p.username else os.environ.get(USERNAME_ENV) or None
    password = urllib.parse.unquote(p.password) if p.password else None
    if password is None and password_file:
        with open(password_file, encoding="utf-8") as fh:
            password = fh.read().strip() or None
    if password is None:
        password = os.environ.get(PASSWORD_ENV) or None
    host = p.hostname if ":" not in p.hostname else f"[{p.hostname}]"
    clean = urllib.parse.urlunsplit((p.scheme, f"{host}:{p.port or 6379}", p.path, "", ""))
    return RedisConfig(clean, prefix or os.environ.get("EXTAUTHZ_REDIS_PREFIX") or "mcp-extauthz", username,
                       password, ca_file, cert_file, key_file, timeout)
