"""Parse `host[:port]` the same way for the policy and for requests, so they compare equal."""

from __future__ import annotations

import ipaddress
import re

_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")


def parse_authority(text: str) -> tuple[str, int | None]:
    """Return (lowercased host, port or None); raise ValueError when it is not an authority.

    IPv6 comes bracketed (`[::1]:8080`); a bare IPv6 literal (`::1`) is accepted without port.
    Hosts are canonicalised (case, one trailing dot, IPv6 compression) so spelling never
    decides which server policy applies.
    """
    if not text or text != text.strip():
        raise ValueError("empty or padded with spaces")
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("'[' without ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("unexpected text after ']'")
            port = _port(rest[1:])
        return _ipv6(host), port
    if text.count(":") > 1:
        return _ipv6(text), None
    host = text
    if ":" in text:
        host, raw_port = text.split(":", 1)
        port = _port(raw_port)
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not _HOST.fullmatch(host) or ".." in host:
        raise ValueError(f"invalid host {host!r}")
    return host, port


def _port(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit():
        raise ValueError(f"invalid port {raw!r}")
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return port


def _ipv6(raw: str) -> str:
    try:
        return ipaddress.IPv6Address(raw).compressed
    except ValueError as exc:
        raise ValueError(f"invalid IPv6 address {raw!r}") from exc
