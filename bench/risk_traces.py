"""Generate the risk calibration traces (tests/corpus/risk/*.jsonl), seeded and deterministic.

Each trace is `extauthz replay` traffic (one JSON object a line; `t` = seconds since the trace
started) decided under tests/corpus/risk/policy.yaml, beginning with the specs of the servers it
uses. `manifest.json` says which traces are benign and which are attacks, whose caller is the
actor, and (attacks) within how many of the actor's requests it must be blocked.

Benign workloads are agents doing their job for hours at realistic rates: listing at every session
start and reconnect (and reconnect storms), several sessions, ~2-5% of calls a mistake the agent
corrects from the error message (a string for an integer, a missing or extra argument, an
oversized write split up), an occasional mistake it gives up on, a tool it lacks tried once, a
hallucinated tool name, a customer it is not assigned, and the product's own false denials (a tool
whose published schema uses an ECMA-262 `\\p{L}` pattern, reads below a `{path*}` template).
Attacks: recon -> probe -> extract across sessions, a slow probe spread over hours, session-id
theft, schema fuzzing (with valid calls between variants to earn forgiveness), cross-server recon,
and customer-id enumeration.

    python bench/risk_traces.py [--out tests/corpus/risk] [--seed 15]
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

ISS = "https://issuer.example"
OUT = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "risk"

S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741 (S and I: the schema shorthands the tables below use)


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or []}


SPECS: dict[str, dict[str, Any]] = {
    "crm": {"server": "crm", "tools": [
        {"name": "lookup_customer", "description": "Look up one customer record.",
         "inputSchema": obj({"customer_id": S}, ["customer_id"])},
        {"name": "search_customers", "description": "Search customers by name or email.",
         "inputSchema": obj({"query": S, "limit": {"type": "integer", "minimum": 1, "maximum": 50}}, ["query"])},
        {"name": "create_ticket", "inputSchema": obj({"customer_id": S, "subject": S, "body": S,
                                                      "priority": {"enum": ["low", "normal", "high"]}},
                                                     ["customer_id", "subject"])},
        {"name": "add_note", "inputSchema": obj({"ticket_id": I, "text": S}, ["ticket_id", "text"])},
        # pydantic/zod publish ECMA-262 patterns: Python's `re` cannot compile \p{L} (issue 15, 1)
        {"name": "update_contact", "inputSchema": obj({"customer_id": S, "name": {
            "type": "string", "pattern": "^[\\p{L} .'-]{1,80}$"}, "email": {"type": "string", "format": "email"}},
            ["customer_id"])},
        {"name": "export_customers", "inputSchema": obj({"format": {"enum": ["csv", "json"]}})},
        {"name": "delete_customer", "inputSchema": obj({"customer_id": S}, ["customer_id"])}],
        "resourceTemplates": [{"uriTemplate": "crm://customers/{customer_id}", "name": "customer"},
                              {"uriTemplate": "kb://articles/{path*}", "name": "article"}],
        "prompts": [{"name": "draft_reply", "arguments": [{"name": "customer_id", "required": True},
                                                          {"name": "tone"}]}]},
    "repo": {"server": "repo", "tools": [
        {"name": "read_file", "inputSchema": obj({"path": S}, ["path"])},
        {"name": "write_file", "inputSchema": obj({"path": S, "content": S}, ["path", "content"])},
        {"name": "list_dir", "inputSchema": obj({"path": S})},
        {"name": "search_code", "inputSchema": obj({"query": S, "max_results": I}, ["query"])},
        {"name": "git_status", "inputSchema": obj({})},
        {"name": "git_diff", "inputSchema": obj({"path": S})},
        {"name": "git_commit", "inputSchema": obj({"message": S}, ["message"])},
        {"name": "git_push", "inputSchema": obj({"remote": S, "branch": S})},
        {"name": "run_tests", "inputSchema": obj({"target": S, "timeout_s": I})}],
        "resources": [{"uri": "repo://README.md", "name": "readme"}]},
    "issues": {"server": "issues", "tools": [
        {"name": "get_issue", "inputSchema": obj({"number": I}, ["number"])},
        {"name": "list_issues", "inputSchema": obj({"state": {"enum": ["open", "closed"]}, "limit": I})},
        {"name": "comment_issue", "inputSchema": obj({"number": I, "body": S}, ["number", "body"])},
        {"name": "delete_issue", "inputSchema": obj({"number": I}, ["number"])}]},
    "docs": {"server": "docs", "tools": [{"name": "search_docs", "inputSchema": obj({"query": S}, ["query"])}],
             "resourceTemplates": [{"uriTemplate": "docs://pages/{slug}", "name": "page"}]},
    "warehouse": {"server": "warehouse", "tools": [
        {"name": "list_tables", "inputSchema": obj({})},
        {"name": "describe_table", "inputSchema": obj({"table": S}, ["table"])},
        {"name": "run_query", "description": "Run read-only SQL on the customer warehouse.",
         "inputSchema": obj({"sql": {"type": "string", "maxLength": 20000},
                             "limit": {"type": "integer", "minimum": 1, "maximum": 10000}}, ["sql"])},
        {"name": "export_table", "inputSchema": obj({"table": S, "format": S}, ["table"])}],
        "resourceTemplates": [{"uriTemplate": "warehouse://tables/{table}", "name": "table"}]},
}
LISTS = {"crm": ["tools/list", "resources/templates/list", "prompts/list"],
         "repo": ["tools/list", "resources/list", "prompts/list"], "issues": ["tools/list"],
         "docs": ["tools/list", "resources/templates/list"],
         "warehouse": ["tools/list", "resources/templates/list"]}
TABLES = ["orders", "customers", "payments", "events", "sessions", "refunds", "products"]


class Trace:
    """One trace being written: simulated time, sessions, request lines."""

    def __init__(self, name: str, rng: random.Random, servers: list[str]) -> None:
        self.name, self.rng, self.t, self.lines = name, rng, 0.0, [{"spec": SPECS[s]} for s in servers]
        self._rid = 0

    def wait(self, lo: float, hi: float) -> None:
        self.t += self.rng.uniform(lo, hi)

    def sid(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def send(self, who: dict[str, Any], server: str, body: Any, *, session: str = "", stateless: bool = False,
             http_method: str = "POST", authority: str | None = None) -> None:
        headers = {"mcp-protocol-version": "2026-07-28" if stateless else "2025-11-25"}
        if session:
            headers["mcp-session-id"] = session
        if stateless and isinstance(body, dict) and "method" in body:
            headers["mcp-method"] = body["method"]
            name = (body.get("params") or {}).get("name", (body.get("params") or {}).get("uri"))
            if isinstance(name, str):
                headers["mcp-name"] = name
        line: dict[str, Any] = {"t": round(self.t, 3), "method": http_method,
                                "authority": authority or f"{server}.example.com", "path": "/mcp",
                                "claims": who, "headers": headers}
        if http_method == "POST":
            line["body"] = body
        self.lines.append(line)

    def rpc(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._rid += 1
        return {"jsonrpc": "2.0", "id": self._rid, "method": method, **({"params": params} if params is not None else {})}

    def call(self, who: dict[str, Any], server: str, tool: str, args: Any, **kw: Any) -> None:
        self.send(who, server, self.rpc("tools/call", {"name": tool, "arguments": args}), **kw)

    def read(self, who: dict[str, Any], server: str, uri: str, **kw: Any) -> None:
        self.send(who, server, self.rpc("resources/read", {"uri": uri}), **kw)

    def open(self, who: dict[str, Any], server: str) -> str:
        """initialize, initialized (binds the session id), then the lists every client asks for."""
        self.send(who, server, self.rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                      "clientInfo": {"name": "agent", "version": "1.0"}}))
        sid = self.sid()
        self.t += 0.05
        self.send(who, server, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid)
        for m in LISTS[server]:
            self.t += self.rng.uniform(0.02, 0.3)
            self.send(who, server, self.rpc(m, {}), session=sid)
        return sid

    def close(self, who: dict[str, Any], server: str, sid: str) -> None:
        self.send(who, server, None, session=sid, http_method="DELETE")


def claims(sub: str, groups: list[str], **extra: Any) -> dict[str, Any]:
    return {"iss": ISS, "sub": sub, "groups": groups, "client_id": "agent", **extra}


def mistake_then_fix(tr: Trace, who: dict[str, Any], server: str, tool: str, bad: Any, good: Any,
                     gives_up: float = 0.1, **kw: Any) -> None:
    """An agent's mistake: the bad call, then (usually) the corrected one a few seconds later."""
    tr.call(who, server, tool, bad, **kw)
    if tr.rng.random() < gives_up:
        return
    tr.wait(2, 12)
    tr.call(who, server, tool, good, **kw)


# -- benign ----------------------------------------------------------------------------------------------

def crm_support(rng: random.Random, *, sub: str = "sam", hours: float = 8.0, tr: Trace | None = None) -> Trace:
    mine = [f"c-{1000 + i}" for i in range(40)]
    who = claims(sub, ["support"], customer_ids=mine)
    tr = tr or Trace("crm_support", rng, ["crm"])
    end = tr.t + hours * 3600
    lacks_tried = hallucinated = False
    while tr.t < end:
        sid = tr.open(who, "crm")
        session_end = tr.t + rng.uniform(40, 90) * 60
        if rng.random() < 0.25:                       # a reconnect storm: the connection flaps twice
            for _ in range(2):
                tr.wait(3, 15)
                sid = tr.open(who, "crm")
        while tr.t < min(session_end, end):
            tr.wait(60, 420)                          # the next ticket
            cid = rng.choice(mine)
            kw = {"session": sid}
            if rng.random() < 0.5:
                tr.call(who, "crm", "search_customers", {"query": rng.choice(["smith", "acme", "@example.org"]),
                                                         "limit": rng.choice([5, 10, 20])}, **kw)
                tr.wait(3, 20)
            for _ in range(rng.randint(1, 4)):
                r = rng.random()
                if r < 0.035:                         # ~3% of calls: a mistake the agent corrects
                    bad = rng.choice([{"query": "smith", "limit": "5"}, {"limit": 5}, {"query": "x", "page": 2}])
                    mistake_then_fix(tr, who, "crm", "search_customers", bad, {"query": "smith", "limit": 5}, **kw)
                elif r < 0.05:
                    mistake_then_fix(tr, who, "crm", "add_note", {"ticket_id": "4411", "text": "called back"},
                                     {"ticket_id": 4411, "text": "called back"}, **kw)
                elif r < 0.5:
                    tr.call(who, "crm", "lookup_customer", {"customer_id": cid}, **kw)
                elif r < 0.75:
                    tr.read(who, "crm", f"crm://customers/{cid}", **kw)
                elif r < 0.9:
                    path = rng.choice(["refunds", "billing/refunds.md", "shipping/delays.md", "faq"])
                    tr.read(who, "crm", f"kb://articles/{path}", **kw)    # nested paths: product's false denial
                else:
                    tr.send(who, "crm", tr.rpc("prompts/get", {"name": "draft_reply", "arguments": {
                        "customer_id": cid, "tone": "friendly"}}), **kw)
                tr.wait(4, 40)
            r = rng.random()
            if r < 0.02 and not lacks_tried:          # tries an export it lacks, once
                lacks_tried = True
                tr.call(who, "crm", "export_customers", {"format": "csv"}, **kw)
            elif r < 0.04:                            # a customer who called but is not assigned to them
                tr.call(who, "crm", "lookup_customer", {"customer_id": f"c-{rng.randint(5000, 5999)}"}, **kw)
            elif r < 0.05 and not hallucinated:       # a tool name the model made up
                hallucinated = True
                tr.call(who, "crm", "get_customer", {"customer_id": cid}, **kw)
            elif r < 0.08:                            # the product cannot compile this schema (\p{L})
                for _ in range(rng.randint(1, 2)):
                    tr.call(who, "crm", "update_contact", {"customer_id": cid, "name": "Zoë Ñúñez"}, **kw)
                    tr.wait(3, 10)
            if rng.random() < 0.8:
                tr.call(who, "crm", "create_ticket", {"customer_id": cid, "subject": "follow-up",
                                                      "priority": rng.choice(["low", "normal"])}, **kw)
            else:
                mistake_then_fix(tr, who, "crm", "create_ticket", {"customer_id": cid, "subject": "refund",
                                                                  "priority": "urgent"},
                                 {"customer_id": cid, "subject": "refund", "priority": "high"}, **kw)
        tr.close(who, "crm", sid)
        tr.wait(30, 600)
    return tr


def coding_agent(rng: random.Random) -> Trace:
    who = claims("dev-bot", ["developers"])
    tr = Trace("coding_agent", rng, ["repo", "issues", "docs"])
    end = 4 * 3600
    files = [f"src/app/{n}.py" for n in ("main", "db", "api", "auth", "models", "utils", "cli", "jobs")]
    pushed = made_up = False
    while tr.t < end:                                 # one task per session set
        sids = {s: tr.open(who, s) for s in ("repo", "issues", "docs")}
        if rng.random() < 0.3:                        # the IDE restarts: every server reconnects twice
            for _ in range(2):
                tr.wait(2, 10)
                sids = {s: tr.open(who, s) for s in ("repo", "issues", "docs")}
        tr.call(who, "issues", "get_issue", {"number": rng.randint(100, 900)}, session=sids["issues"])
        for _ in range(rng.randint(20, 80)):
            tr.wait(2, 12)
            f = rng.choice(files)
            r = rng.random()
            kw = {"session": sids["repo"]}
            if r < 0.02:
                mistake_then_fix(tr, who, "repo", "run_tests", {"target": "tests/", "timeout_s": "120"},
                                 {"target": "tests/", "timeout_s": 120}, **kw)
            elif r < 0.035:
                mistake_then_fix(tr, who, "repo", "read_file", {"file": f}, {"path": f}, **kw)
            elif r < 0.045:                           # too big a write: split into two
                tr.call(who, "repo", "write_file", {"path": f, "content": "x" * 17000}, **kw)
                tr.wait(3, 10)
                tr.call(who, "repo", "write_file", {"path": f, "content": "x" * 9000}, **kw)
                tr.call(who, "repo", "write_file", {"path": f + ".part", "content": "x" * 9000}, **kw)
            elif r < 0.3:
                tr.call(who, "repo", "read_file", {"path": f}, **kw)
            elif r < 0.42:
                tr.call(who, "repo", "search_code", {"query": rng.choice(["TODO", "def ", "session", "retry"]),
                                                     "max_results": 20}, **kw)
            elif r < 0.5:
                tr.call(who, "repo", "list_dir", {"path": "src/app"}, **kw)
            elif r < 0.65:
                tr.call(who, "repo", "write_file", {"path": f, "content": "print('ok')\n" * rng.randint(1, 12)}, **kw)
            elif r < 0.75:
                tr.call(who, "repo", "run_tests", {"target": "tests/", "timeout_s": 600}, **kw)
            elif r < 0.82:
                tr.call(who, "repo", "git_diff", {"path": f}, **kw)
            elif r < 0.87:
                tr.call(who, "repo", "git_status", {}, **kw)
            elif r < 0.93:
                tr.call(who, "docs", "search_docs", {"query": "retry policy"}, session=sids["docs"])
            elif r < 0.96:
                slug = rng.choice(["intro", "api/auth", "guides/deploy"])     # nested: a guess ({slug} is one segment)
                tr.read(who, "docs", f"docs://pages/{slug}", session=sids["docs"])
            elif r < 0.985 and not made_up:
                made_up = True
                tr.call(who, "repo", "apply_patch", {"patch": "--- a\n+++ b\n"}, **kw)
            else:
                tr.call(who, "issues", "list_issues", {"state": "open", "limit": 20}, session=sids["issues"])
        tr.call(who, "repo", "git_commit", {"message": "fix: retry on timeout"}, session=sids["repo"])
        if not pushed and rng.random() < 0.5:         # it lacks the release role: tries to push once
            pushed = True
            tr.call(who, "repo", "git_push", {"remote": "origin", "branch": "main"}, session=sids["repo"])
        tr.call(who, "issues", "comment_issue", {"number": 101, "body": "fixed in the last commit"},
                session=sids["issues"])
        for s, sid in sids.items():
            tr.close(who, s, sid)
        tr.wait(60, 900)
    return tr


def data_analyst(rng: random.Random) -> Trace:
    """Stateless 2026-07-28 traffic: no session ids, routing headers; lists at each notebook start."""
    who = claims("ana", ["analysts"])
    tr = Trace("data_analyst", rng, ["warehouse"])
    end = 6 * 3600
    lacked = made_up = False

    def q(args: dict[str, Any]) -> None:
        tr.call(who, "warehouse", "run_query", args, stateless=True)
    while tr.t < end:
        for m in LISTS["warehouse"]:
            tr.send(who, "warehouse", tr.rpc(m, {}), stateless=True)
        notebook_end = tr.t + rng.uniform(30, 100) * 60
        while tr.t < min(end, notebook_end):
            tr.wait(40, 300)
            table = rng.choice(TABLES)
            r = rng.random()
            if r < 0.15:
                tr.call(who, "warehouse", "describe_table", {"table": table}, stateless=True)
            elif r < 0.2:
                tr.read(who, "warehouse", f"warehouse://tables/{table}", stateless=True)
            elif r < 0.225:
                mistake_then_fix(tr, who, "warehouse", "run_query", {"sql": f"select * from {table}", "limit": "100"},
                                 {"sql": f"select * from {table}", "limit": 100}, stateless=True)
            elif r < 0.24:
                mistake_then_fix(tr, who, "warehouse", "run_query", {"sql": "select 1", "limit": 50000},
                                 {"sql": "select 1", "limit": 10000}, stateless=True)
            elif r < 0.245 and not lacked:
                lacked = True
                tr.call(who, "warehouse", "export_table", {"table": table, "format": "parquet"}, stateless=True)
            elif r < 0.25 and not made_up:
                made_up = True
                tr.call(who, "warehouse", "run_sql", {"sql": "select 1"}, stateless=True)
            else:
                q({"sql": f"select count(*) from {table} where day > current_date - {rng.randint(1, 90)}",
                   "limit": rng.choice([100, 1000])})
        tr.call(who, "warehouse", "list_tables", {}, stateless=True)
    return tr


# -- attacks ---------------------------------------------------------------------------------------------

ATTACKER = claims("mallory", ["support"], customer_ids=["c-1000", "c-1001"])
GUESSES = ["admin_shell", "debug_dump", "run_sql", "drop_tables", "get_all_customers", "internal_notes",
           "impersonate", "reset_password", "list_users", "dump_db"]
FUZZ = [{"customer_id": 1000}, {"customer_id": ["c-1000"]}, {"customer_id": {"$ne": ""}}, {},
        {"customer_id": "c-1000", "include_internal_notes": True}, {"customer_id": None},
        {"customer_id": "c-1000", "fields": ["ssn"]}, {"customer_id": True}, {"customer_id": "c-1000", "admin": 1},
        {"customer_id": "x" * 17000}, {"customer_id": "c-1000", "__proto__": {"isAdmin": True}},
        {"customer_id": 1.5}, {"customer_id": "c-1000", "debug": True}, {"id": "c-1000"},
        {"customer_id": "c-1000", "limit": -1}, {"customer_id": [1, 2]}, {"customer_id": {"id": "c-1"}},
        {"customer_id": "c-1000", "query": "' OR 1=1 --"}, {"customer_id": 0}, {"customer_id": "c-1000", "x": ""}]


def recon_probe_extract(rng: random.Random) -> Trace:
    tr = Trace("recon_probe_extract", rng, ["crm"])
    who = ATTACKER
    s1 = tr.open(who, "crm")
    for g in GUESSES[:6]:
        tr.wait(2, 8)
        tr.call(who, "crm", g, {}, session=s1)
    tr.close(who, "crm", s1)
    tr.wait(30, 120)
    s2 = tr.open(who, "crm")
    for args in FUZZ[:4]:
        tr.wait(2, 8)
        tr.call(who, "crm", "lookup_customer", args, session=s2)
    tr.call(who, "crm", "export_customers", {"format": "csv"}, session=s2)
    tr.call(who, "crm", "lookup_customer", {"customer_id": "c-2000"}, session=s2)
    tr.wait(30, 120)
    s3 = tr.open(who, "crm")
    for i in range(30):
        tr.wait(1, 4)
        tr.read(who, "crm", f"crm://customers/c-100{i % 2}", session=s3)
    return tr


def slow_probe(rng: random.Random) -> Trace:
    """One probe every few minutes for hours, each under the decay, between ordinary-looking calls."""
    tr = Trace("slow_probe", rng, ["crm"])
    who = ATTACKER
    probes: list[Callable[[str], None]] = []
    for g in GUESSES:
        probes.append(lambda s, g=g: tr.call(who, "crm", g, {}, session=s))
    for n in range(20):
        probes.append(lambda s, n=n: tr.call(who, "crm", "lookup_customer", {"customer_id": f"c-{2000 + 37 * n}"},
                                             session=s))
    for args in FUZZ[:8]:
        probes.append(lambda s, a=args: tr.call(who, "crm", "search_customers", {"query": "a", **a}, session=s))
    rng.shuffle(probes)
    sid = tr.open(who, "crm")
    for i, probe in enumerate(probes):
        tr.wait(240, 540)
        if i % 6 == 5:                               # a new session now and then
            sid = tr.open(who, "crm")
        probe(sid)
        tr.wait(20, 90)
        tr.read(who, "crm", "crm://customers/c-1000", session=sid)
    return tr


def session_theft(rng: random.Random) -> Trace:
    """A victim works; the attacker (another support user) replays session ids leaked from logs."""
    tr = Trace("session_theft", rng, ["crm"])
    victim = claims("victim", ["support"], customer_ids=[f"c-{1000 + i}" for i in range(40)])
    eve = claims("eve", ["support"], customer_ids=["c-1001"])
    stolen = [tr.open(victim, "crm") for _ in range(3)]
    for i in range(20):
        tr.wait(10, 60)
        tr.call(victim, "crm", "lookup_customer", {"customer_id": f"c-{1000 + i}"}, session=stolen[i % 3])
    mine = tr.open(eve, "crm")
    for n, sid in enumerate(stolen):
        tr.wait(5, 30)
        tr.send(eve, "crm", tr.rpc("tools/list", {}), session=sid)
        tr.wait(2, 10)
        tr.call(eve, "crm", "lookup_customer", {"customer_id": f"c-{1010 + n}"}, session=sid)
        tr.wait(2, 10)
        tr.read(eve, "crm", f"crm://customers/c-{1020 + n}", session=sid)
    for g in GUESSES[:2]:
        tr.call(eve, "crm", g, {}, session=mine)
    for i in range(20):
        tr.wait(2, 10)
        tr.read(eve, "crm", "crm://customers/c-1001", session=mine)
        if i % 5 == 0:
            tr.call(victim, "crm", "lookup_customer", {"customer_id": "c-1002"}, session=stolen[0])
    return tr


def schema_fuzzing(rng: random.Random) -> Trace:
    """Variants of one tool's arguments, a valid call after every third to look corrected."""
    tr = Trace("schema_fuzzing", rng, ["crm"])
    who = ATTACKER
    sid = tr.open(who, "crm")
    for i, args in enumerate(FUZZ):
        tr.wait(1, 6)
        tr.call(who, "crm", "lookup_customer", args, session=sid)
        if i % 3 == 2:
            tr.wait(1, 4)
            tr.call(who, "crm", "lookup_customer", {"customer_id": "c-1000"}, session=sid)
    for args in FUZZ[:10]:
        tr.wait(1, 6)
        tr.call(who, "crm", "search_customers", {"query": "a", **args}, session=sid)
    for _ in range(10):
        tr.read(who, "crm", "crm://customers/c-1000", session=sid)
    return tr


def cross_server_recon(rng: random.Random) -> Trace:
    """Servers nobody configured, listing on every server in many sessions, ACLs, then the warehouse."""
    tr = Trace("cross_server_recon", rng, ["crm", "repo", "issues", "docs", "warehouse"])
    who = claims("rex", ["developers", "analysts"])
    for host in ("admin", "internal", "billing", "vault", "grafana", "jenkins"):
        tr.wait(0.5, 2)
        tr.send(who, "x", tr.rpc("tools/list", {}), authority=f"{host}.example.com")
    sids = {}
    for _ in range(3):
        for s in ("crm", "repo", "issues", "docs", "warehouse"):
            sids[s] = tr.open(who, s)
    tr.wait(5, 20)
    tr.call(who, "repo", "git_push", {"remote": "origin", "branch": "main"}, session=sids["repo"])
    tr.call(who, "issues", "delete_issue", {"number": 1}, session=sids["issues"])
    tr.call(who, "crm", "lookup_customer", {"customer_id": "c-1000"}, session=sids["crm"])
    tr.call(who, "warehouse", "export_table", {"table": "customers"}, session=sids["warehouse"])
    for t in TABLES * 3:
        tr.wait(2, 8)
        tr.call(who, "warehouse", "run_query", {"sql": f"select * from {t}", "limit": 10000},
                session=sids["warehouse"])
    return tr


def id_enumeration(rng: random.Random) -> Trace:
    """Walk customer ids the caller is not assigned (IDOR): constraint denials, then reads of its own."""
    tr = Trace("id_enumeration", rng, ["crm"])
    who = ATTACKER
    sid = tr.open(who, "crm")
    for n in range(40):
        tr.wait(1, 5)
        tr.call(who, "crm", "lookup_customer", {"customer_id": f"c-{1002 + n}"}, session=sid)
    for _ in range(10):
        tr.read(who, "crm", "crm://customers/c-1000", session=sid)
    return tr


BENIGN = {"crm_support": (crm_support, "sam", "a support agent's 8-hour shift on the CRM"),
          "coding_agent": (coding_agent, "dev-bot", "a coding agent for 4 hours on repo, issues and docs"),
          "data_analyst": (data_analyst, "ana", "an analyst's 6 hours of stateless warehouse queries")}
ATTACKS = {"recon_probe_extract": (recon_probe_extract, "mallory", 40, "unknown names, probes, reads, 3 sessions"),
           "slow_probe": (slow_probe, "mallory", 200, "one probe every 4-9 minutes over hours"),
           "session_theft": (session_theft, "eve", 20, "another user's session ids replayed"),
           "schema_fuzzing": (schema_fuzzing, "mallory", 30, "argument variants with valid calls between"),
           "cross_server_recon": (cross_server_recon, "rex", 90, "unknown servers, listing bursts, ACLs"),
           "id_enumeration": (id_enumeration, "mallory", 30, "customer ids not assigned to the caller")}


def generate(out: Path, seed: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"seed": seed, "policy": "policy.yaml", "traces": []}
    items = [(n, f, sub, "benign", None, d) for n, (f, sub, d) in BENIGN.items()]
    items += [(n, f, sub, "attack", w, d) for n, (f, sub, w, d) in ATTACKS.items()]
    for i, (name, fn, sub, kind, within, desc) in enumerate(items):
        tr = fn(random.Random(seed * 1000 + i))
        with open(out / f"{name}.jsonl", "w") as f:
            for line in tr.lines:
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
        entry = {"file": f"{name}.jsonl", "kind": kind, "actor": f"{ISS}|{sub}|agent", "description": desc,
                 "requests": sum(1 for x in tr.lines if "spec" not in x), "hours": round(tr.t / 3600, 2)}
        if within is not None:
            entry["blockWithin"] = within
        if name == "session_theft":
            entry["bystanders"] = [f"{ISS}|victim|agent"]
        manifest["traces"].append(entry)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=15)
    args = ap.parse_args()
    m = generate(args.out, args.seed)
    for t in m["traces"]:
        print(f"{t['file']:<28} {t['kind']:<7} {t['requests']:>6} requests  {t['hours']:>5} h")


if __name__ == "__main__":
    main()
