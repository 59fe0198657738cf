"""`extauthz discover URL [-H 'Name: value']... [--format text|json] [--out FILE] [--timeout S]`.

Exit 0 with the report; 1 with one line on stderr when the server is unreachable, refuses the
credentials or is not MCP (never a traceback); 2 for a malformed argument.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile

import orjson

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_headers(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in values:
        name, sep, value = raw.partition(":")
        name = name.strip()
        if not sep or not name or any(c in name for c in " \t\r\n") or any(c in value for c in "\r\n"):
            raise ValueError(f"bad header {raw!r}: expected 'Name: value'")
        out[name] = value.strip()
    return out


def discover_main(a: argparse.Namespace) -> int:
    from extauthz.discovery.client import DiscoveryError, discover, silence_sdk_logs
    from extauthz.discovery.findings import findings
    from extauthz.discovery.report import snapshot_json, text_report

    try:
        headers = parse_headers(a.header)
    except ValueError as e:
        print(f"extauthz discover: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not a.url.lower().startswith(("http://", "https://")):
        print(f"extauthz discover: {a.url!r} is not an http:// or https:// URL", file=sys.stderr)
        return EXIT_USAGE
    if not a.timeout > 0:
        print("extauthz discover: --timeout must be positive", file=sys.stderr)
        return EXIT_USAGE
    silence_sdk_logs()
    try:
        snap = asyncio.run(discover(a.url, headers=headers, timeout=a.timeout, mode=a.protocol))
    except DiscoveryError as e:
        print(f"extauthz discover: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    found = findings(snap.lists, snap.instructions)
    if a.format == "json":
        out = orjson.dumps(snapshot_json(snap, found), option=orjson.OPT_INDENT_2) + b"\n"
    else:
        out = text_report(snap, found).encode()
    if a.out:
        try:
            _write_atomically(a.out, out)
        except OSError as e:
            print(f"extauthz discover: cannot write {a.out}: {e.strerror or e}", file=sys.stderr)
            return EXIT_FAILED
        print(f"wrote {a.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    for kind, err in snap.errors.items():
        print(f"extauthz discover: warning: {kind}: {err}", file=sys.stderr)
    for kind in snap.truncated:
        print(f"extauthz discover: warning: {kind} list truncated at a page/item bound", file=sys.stderr)
    return EXIT_OK


def _write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".discover-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # what open() would have made, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
