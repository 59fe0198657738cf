"""`extauthz inventory`: read the live catalog from a running service's admin port."""

from __future__ import annotations

import json
import sys
import urllib.request


def inventory_main(admin: str, fmt: str, out=None) -> int:
    out = out or sys.stdout
    try:
        with urllib.request.urlopen(admin.rstrip("/") + "/v1/inventory", timeout=5) as r:
            inv = json.load(r)
    except (OSError, ValueError) as e:
        print(f"cannot read inventory from {admin}: {e}", file=sys.stderr)
        return 1
    if fmt == "json":
        json.dump(inv, out, indent=2)
        print(file=out)
        return 0
    rows = [("SERVER", "KIND", "NAME", "COVERED")]
    for s in inv.get("servers", []):
        for kind, key in (("tool", "tools"), ("resource", "resources"), ("prompt", "prompts")):
            for c in s.get(key, []):
                rows.append((s["server"], kind, c.get("name") if kind != "resource" else c.get("uri"),
                             "yes" if c.get("covered") else "NO"))
        for t in s.get("resourceTemplates", []):
            rows.append((s["server"], "template", t["uriTemplate"], "-"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)
    return 0
