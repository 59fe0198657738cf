"""Sensitive-data classification: planted values are found (each type), near misses are not,
responses yield counts only, scans are bounded, and no input shape makes either function raise."""

from __future__ import annotations

import base64
import json
import math
import random
import re

import pytest

from extauthz.detect.capability import Finding, categories, classify_capability
from extauthz.detect.responses import scan, scan_response


def _jwt() -> str:
    def seg(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{seg({'alg': 'HS256', 'typ': 'JWT'})}.{seg({'sub': 'alice', 'exp': 1900000000})}.c2lnbmF0dXJlLWJ5dGVz"


# Token-shaped test values are assembled from pieces so that the source holds no token literal.
GH = "gh" + "p_" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7C"
SLACK = "xo" + "xb-" + "123456789012-4567890123-AbCdEfGhIjKlMnOp"
STRIPE = "sk" + "_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
AWS = "AK" + "IA" + "IOSFODNN7EXAMPLE"
PEM = "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
JWT = _jwt()

PLANTED = [
    # (id, context before, sensitive value, context after, expected key)
    ("email", "Contact ", "ada.lovelace+crm@example.co.uk", " today", "pii.email"),
    ("phone intl", "call ", "+1 650-253-0000", " now", "pii.phone"),
    ("phone uk", "office ", "+44 20 7946 0958", "", "pii.phone"),
    ("phone nanp", "mobile ", "(415) 555-2671", ".", "pii.phone"),
    ("phone dots", "tel ", "415.555.2671", "", "pii.phone"),
    ("visa spaced", "card ", "4111 1111 1111 1111", " exp 12/29", "pii.payment_card"),
    ("mastercard", "pan=", "5555555555554444", "", "pii.payment_card"),
    ("amex", "amex ", "3782-822463-10005", "", "pii.payment_card"),
    ("discover", "", "6011111111111117", "", "pii.payment_card"),
    ("jcb", "JCB ", "3530111333300000", "", "pii.payment_card"),
    ("us ssn", "SSN: ", "536-90-4399", "", "pii.us_ssn"),
    ("iban de", "IBAN ", "DE89 3704 0044 0532 0130 00", "", "pii.iban"),
    ("iban gb", "", "GB82WEST12345698765432", "", "pii.iban"),
    ("br cpf", "CPF ", "390.533.447-05", "", "pii.national_id"),
    ("es dni", "DNI ", "12345678Z", "", "pii.national_id"),
    ("in aadhaar", "Aadhaar ", "2341 2341 2346", "", "pii.national_id"),
    ("it codice fiscale", "CF ", "RCCMNL83S18D969H", "", "pii.national_id"),
    ("fr nir", "NIR ", "2 95 10 99 126 111 93", "", "pii.national_id"),
    ("aws key", "aws_access_key_id = ", AWS, "", "secret.aws_access_key"),
    ("pem", "", PEM, "", "secret.private_key"),
    ("jwt", "id_token: ", JWT, "", "secret.jwt"),
    ("github", "token ", GH, "", "secret.api_token"),
    ("slack", "", SLACK, "", "secret.api_token"),
    ("stripe", "", STRIPE, "", "secret.api_token"),
    ("bearer header", "Authorization: Bearer ", "AbCdEfGhIjKlMnOpQrStUvWx0123", "", "secret.api_token"),
    ("env password", "DB_PASSWORD=", "Tr0ub4dor&3", "", "secret.password"),
    ("json password in text", '{"user": "svc", "password": "', "Tr0ub4dor3x", '"}', "secret.password"),
    ("api_key assignment", "api_key: ", "9f8e7d6c5b4a39281706", "", "secret.api_token"),
    ("client secret", "client_secret=", "Zq8Wn2Lp5Rt7Yx1Vb4", "", "secret.credential"),
    ("credentials in url", "postgres://app:", "s3cretpw", "@db.internal:5432/app", "secret.credential"),
]


@pytest.mark.parametrize("before,value,after,key", [p[1:] for p in PLANTED], ids=[p[0] for p in PLANTED])
def test_planted_value_is_counted_once(before: str, value: str, after: str, key: str) -> None:
    assert scan_response(before + value + after) == {key: 1}
    assert scan_response({"content": [{"type": "text", "text": f"{before}{value}{after}"}]}) == {key: 1}


NEAR_MISSES = [
    ("luhn-invalid 16 digits", "card 4111 1111 1111 1112"),
    ("luhn-valid, no card network", "1234567812345670"),
    ("all zeros", "0000 0000 0000 0000"),
    ("masked card", "**** **** **** 1111"),
    ("uuid", "id 123e4567-e89b-12d3-a456-426614174000"),
    ("iso timestamp", "2024-01-15T10:30:00Z"),
    ("iso date and time", "at 10:30 on 2024-01-15, order 1234-5678"),
    ("unix seconds", "ts=1700000000"),
    ("unix millis", "1700000000123"),
    ("long integer", "12345678901234567890"),
    ("ten digits bare", "order 4155552671 shipped"),
    ("version strings", "v10.15.3 and 2.31.0.1 and 1.2.3-rc.1"),
    ("ipv4", "host 192.168.100.200"),
    ("short digits", "+1 234"),
    ("invalid ssn area", "000-12-3456 666-12-3456 912-34-5678"),
    ("advertised ssn", "078-05-1120"),
    ("iban bad checksum", "DE89 3704 0044 0532 0130 01"),
    ("cpf bad check digits", "390.533.447-06"),
    ("retina image", "icon@2x.png"),
    ("no tld", "root@localhost"),
    ("npm version pin", "pkg@1.2.3"),
    ("mention", "@alice said hi"),
    ("sha256", "sha256:" + "ab" * 32),
    ("base64 blob", base64.b64encode(bytes(range(48))).decode()),
    ("jwt-looking junk", "eyJub3QganNvbg.eyJzdWIiOiIxIn0.x"),
    ("password placeholder", "password: ********"),
    ("password variable", "password=${DB_PASSWORD}"),
    ("password hint", "password_hint=petname"),
    ("plain url with port", "https://example.com:8080/path?a=b"),
    ("token as a word", "count the tokens with the tokenizer; token=abc"),
    ("aws-looking lower case", "akiaiosfodnn7example"),
]


@pytest.mark.parametrize("text", [p[1] for p in NEAR_MISSES], ids=[p[0] for p in NEAR_MISSES])
def test_near_miss_is_not_counted(text: str) -> None:
    assert scan_response(text) == {}


def test_response_keys_named_like_sensitive_fields() -> None:
    doc = {
        "password": "hunter22", "api_key": "q1w2e3r4t5y6", "access_token": JWT, "token_type": "Bearer",
        "expires_in": 3600, "password_hint": "first pet", "dob": "1990-01-01", "ssn": "536904399",
        "phone": "4155552671", "card_number": 4111111111111111, "salary": 120000,
        "allergies": ["peanut", "latex"], "street_address": "1 Main St", "diagnosis": "J45.909",
    }
    assert scan_response(doc) == {
        "financial.salary": 1, "health.diagnosis": 3, "pii.address": 1, "pii.date_of_birth": 1,
        "pii.payment_card": 1, "pii.phone": 1, "pii.us_ssn": 1,
        "secret.api_token": 1, "secret.jwt": 1, "secret.password": 1,
    }


@pytest.mark.parametrize("value", ["", "   ", None, False, "********", "<redacted>", "${SECRET}", "null", {}, []])
def test_secret_key_without_a_real_value_is_not_counted(value: object) -> None:
    assert scan_response({"password": value, "client_secret": value}) == {}


def test_key_context_still_validates() -> None:
    assert scan_response({"ssn": "000000000", "card_number": "**** **** **** 1111", "phone": "12345",
                          "email": "n/a"}) == {}


def test_mcp_tool_result_counts_text_and_structured_content() -> None:
    customer = {"id": "c-42", "name": "Ada Lovelace", "email": "ada@example.com", "phone": "+1 650-253-0000",
                "created": "2024-01-15T10:30:00Z", "uuid": "123e4567-e89b-12d3-a456-426614174000"}
    result = {"content": [{"type": "text", "text": json.dumps(customer)}], "structuredContent": customer,
              "isError": False}
    counts = scan_response({"jsonrpc": "2.0", "id": 7, "result": result})
    assert counts == {"pii.email": 2, "pii.phone": 2}
    assert categories(counts) == ["pii"]


def test_resource_and_prompt_results() -> None:
    resource = {"contents": [{"uri": "crm://customers/42", "mimeType": "text/plain",
                              "text": f"IBAN GB82WEST12345698765432\n{PEM}"}]}
    prompt = {"messages": [{"role": "user", "content": {"type": "text", "text": "Email bob@example.org"}}]}
    assert scan_response(resource) == {"pii.iban": 1, "secret.private_key": 1}
    assert scan_response(prompt) == {"pii.email": 1}


def test_counts_only_no_value_leaks() -> None:
    values = [p[2] for p in PLANTED] + ["hunter22", "1990-01-01", "536904399", "4155552671"]
    doc = {"content": [{"type": "text", "text": " | ".join(p[1] + p[2] + p[3] for p in PLANTED)}],
           "structuredContent": {"password": "hunter22", "dob": "1990-01-01", "ssn": "536904399",
                                 "phone": "4155552671"}}
    result = scan(doc)
    assert sum(result.counts.values()) >= len(PLANTED)
    assert all(re.fullmatch(r"(pii|secret|financial|health)\.[a-z_]+", k) and type(n) is int
               for k, n in result.counts.items())
    out = repr(result) + json.dumps(result.counts)
    for v in values:
        for word in re.findall(r"[^\s.-]{5,}", v):
            for i in range(len(word) - 4):
                assert word[i:i + 5] not in out, (word, out)


def test_bounded_by_bytes_on_a_50mb_string() -> None:
    unit = "x" * 80 + " ada@example.com "          # 97 characters, one email each
    doc = {"content": [{"type": "text", "text": unit * 540_000}]}    # ~52 MB
    r = scan(doc, max_bytes=1 << 20)
    assert r.truncated
    assert r.scanned_chars <= 1 << 20
    assert 10_000 <= r.counts["pii.email"] <= (1 << 20) // len(unit) + 1


def test_bounded_by_bytes_on_many_small_strings() -> None:
    doc = {"items": [f"row {i} user{i}@example.com" for i in range(2_000_000)]}
    r = scan(doc, max_bytes=64 * 1024)
    assert r.truncated and r.scanned_chars <= 64 * 1024
    assert 0 < r.counts["pii.email"] < 64 * 1024 // 20


def test_bounded_by_nodes_on_a_wide_list_without_strings() -> None:
    r = scan([None] * 5_000_000 + ["ada@example.com"], max_bytes=1 << 20)
    assert r.truncated and r.counts == {} and r.scanned_chars == 0


def test_bounded_by_depth() -> None:
    deep: object = "ada@example.com"
    for _ in range(200_000):
        deep = [deep]
    r = scan({"a": deep, "b": "bob@example.org"}, max_depth=32)
    assert r.truncated and r.counts == {"pii.email": 1}
    shallow: object = "ada@example.com"
    for _ in range(10):
        shallow = {"x": [shallow]}
    assert scan_response(shallow, max_depth=32) == {"pii.email": 1}
    assert scan_response(shallow, max_depth=5) == {}


@pytest.mark.parametrize("unit", ["a_", "1", "1 ", "+1", "a@", "eyJ.", "1-", "1.", "AB12", "password=", "a://b:c", " "])
def test_pathological_text_is_scanned_to_the_budget(unit: str) -> None:
    r = scan(unit * ((1 << 18) // len(unit) + 1), max_bytes=1 << 18)
    assert r.scanned_chars == 1 << 18 and r.truncated


def _cyclic() -> list[object]:
    a: list[object] = [1]
    a.append(a)
    d: dict[str, object] = {"self": None}
    d["self"] = d
    a.append(d)
    return a


JUNK = [None, 0, -1, 1.5, math.nan, math.inf, True, 10 ** 5000, "", "\ud800\udfff\ud800", b"ada@example.com",
        bytearray(b"\xff\xfe 4111 1111 1111 1111"), memoryview(b"bob@example.org"),
        memoryview(bytes(range(16))).cast("I"),
        {1: "x", (2, 3): "y", None: "z"}, {"ssn": 10 ** 5000, "card_number": -4111111111111111, "phone": 1.5e300},
        {"password": object()}, {"dob": [[[[]]]]}, [[], [[]], {}], set([1, 2]), frozenset(), object(), _cyclic(),
        {"content": [{"type": "text", "text": None}, {"text": 5}, {"text": ["a", {"b": b"c"}]}]}]


@pytest.mark.parametrize("doc", JUNK, ids=[f"junk{i}" for i in range(len(JUNK))])
def test_junk_never_raises(doc: object) -> None:
    counts = scan_response(doc)
    assert isinstance(counts, dict) and all(isinstance(n, int) and n > 0 for n in counts.values())


def test_bytes_like_values_are_scanned() -> None:
    assert scan_response([b"ada@example.com", bytearray(b"4111 1111 1111 1111")]) == {
        "pii.email": 1, "pii.payment_card": 1}


def test_degenerate_bounds() -> None:
    assert scan_response("ada@example.com", max_bytes=0) == {}
    assert scan_response("ada@example.com", max_bytes=-5, max_depth=-1) == {}
    assert scan_response(["ada@example.com"], max_depth=0) == {}
    assert scan_response("ada@example.com", max_depth=0) == {"pii.email": 1}


def test_random_json_fuzz_never_raises() -> None:
    rng = random.Random(20240601)
    atoms = ["", "x", "ada@example.com", "4111 1111 1111 1111", "+1 650-253-0000", "password", "\u200b", "\ud800",
             "eyJ", "-----BEGIN", 0, 1.0, None, True, 10 ** 30, -(10 ** 19)]

    def gen(depth: int) -> object:
        r = rng.random()
        if depth > 6 or r < 0.4:
            a = rng.choice(atoms)
            return a * rng.randint(1, 3) if isinstance(a, str) else a
        if r < 0.7:
            return [gen(depth + 1) for _ in range(rng.randint(0, 5))]
        return {rng.choice(["password", "email", "ssn", "dob", "k", "", "token", "salary"]) + str(rng.randint(0, 2)):
                gen(depth + 1) for _ in range(rng.randint(0, 5))}

    for _ in range(400):
        doc = gen(0)
        assert scan_response(doc) == scan_response(doc)
        classify_capability(rng.choice(["tools", "prompts", "resources", "x"]),
                            {"name": gen(3), "description": gen(3), "inputSchema": gen(0), "arguments": gen(1)})


# --- classify_capability ------------------------------------------------------------------------

def _types(findings: tuple[Finding, ...]) -> set[tuple[str, str]]:
    return {(f.category, f.type) for f in findings}


def test_crm_lookup_customer_is_pii() -> None:
    tool = {"name": "lookup_customer", "description": "Look up a customer record by id.",
            "inputSchema": {"type": "object", "properties": {"customer_id": {"type": "string"}}},
            "outputSchema": {"type": "object", "properties": {
                "email": {"type": "string", "format": "email"}, "phone": {"type": "string"},
                "name": {"type": "string"}}}}
    found = classify_capability("tools", tool)
    assert found == (
        Finding("pii", "email", "output-format:/properties/email"),
        Finding("pii", "email", "output-property:/properties/email"),
        Finding("pii", "personal_record", "description"),       # "customer record": about a person
        Finding("pii", "personal_record", "name"),
        Finding("pii", "phone", "output-property:/properties/phone"),
    )
    assert categories(found) == ["pii"]


def test_a_customer_key_property_is_not_a_record() -> None:
    """`customer_id` names a key, not data about the person: only names, titles, descriptions and
    URIs that speak of customers/employees make a capability a personal record."""
    tool = {"name": "ping", "description": "Health check.",
            "inputSchema": {"type": "object", "properties": {"customer_id": {"type": "string"}}}}
    assert classify_capability("tools", tool) == ()


def test_input_properties_and_formats() -> None:
    tool = {"name": "update_contact", "inputSchema": {"type": "object", "properties": {
        "contactEmail": {"type": "string", "format": "idn-email"},
        "mobileNumber": {"type": "string"},
        "dateOfBirth": {"type": "string", "format": "date"},
        "login": {"type": "string", "format": "password"}}}}
    assert classify_capability("tools", tool) == (
        Finding("pii", "date_of_birth", "property:/properties/dateOfBirth"),
        Finding("pii", "email", "format:/properties/contactEmail"),
        Finding("pii", "email", "property:/properties/contactEmail"),
        Finding("pii", "phone", "property:/properties/mobileNumber"),
        Finding("secret", "password", "format:/properties/login"),
    )


@pytest.mark.parametrize("name,desc", [("get_env", "Returns environment variables of the server process."),
                                       ("print_env", ""), ("printenv", None), ("read_dotenv", "Reads the file.")])
def test_env_dumping_tools_are_secret(name: str, desc: str | None) -> None:
    found = classify_capability("tools", {"name": name, "description": desc,
                                          "inputSchema": {"type": "object", "properties": {}}})
    assert Finding("secret", "credential", "name") in found
    assert categories(found) == ["secret"]


def test_refund_payment_is_financial_and_pii() -> None:
    tool = {"name": "refund_payment", "description": "Refund a card payment.",
            "inputSchema": {"type": "object", "required": ["card_number", "amount"], "properties": {
                "card_number": {"type": "string", "pattern": "^[0-9]{16}$"}, "cvv": {"type": "string"},
                "amount": {"type": "number"}, "currency": {"type": "string"}}}}
    found = classify_capability("tools", tool)
    assert categories(found) == ["financial", "pii"]
    assert Finding("financial", "payment", "name") in found
    assert Finding("pii", "payment_card", "property:/properties/card_number") in found
    assert Finding("pii", "payment_card", "property:/properties/cvv") in found


BENIGN = [
    {"name": "add", "description": "Adds two numbers.",
     "inputSchema": {"type": "object", "properties": {"a": {"type": "number", "description": "First number"},
                                                      "b": {"type": "number", "description": "Second number"}}}},
    {"name": "echo", "description": "Echoes back the input.",
     "inputSchema": {"type": "object", "properties": {"message": {"type": "string",
                                                                  "description": "Message to echo"}}}},
    {"name": "count_tokens", "description": "Counts the tokens in a text with the model's tokenizer.",
     "inputSchema": {"type": "object", "properties": {"text": {}, "max_tokens": {}, "model": {}}}},
    {"name": "list_issues", "description": "List issues, one page at a time.",
     "inputSchema": {"type": "object", "properties": {"pageToken": {}, "next_page_token": {}, "cursor": {},
                                                      "sort_key": {}, "limit": {"type": "integer"}}}},
    {"name": "deploy", "description": "Deploy a version to an environment.",
     "inputSchema": {"type": "object", "properties": {"env": {"enum": ["dev", "prod"]}, "version": {}}}},
    {"name": "ping", "description": "Ping a host.", "inputSchema": {"properties": {"address": {}, "count": {}}}},
    {"name": "get_weather", "title": "Weather", "annotations": {"readOnlyHint": True, "title": "Weather"},
     "description": "Current weather for a city, e.g. 2024-01-15T10:30:00Z, v1.2.3.",
     "inputSchema": {"properties": {"city": {"type": "string"}, "units": {"enum": ["metric", "imperial"]}}}},
    {"name": "cache_get", "description": "Read a key from the cache.", "inputSchema": {"properties": {"key": {}}}},
]


@pytest.mark.parametrize("tool", BENIGN, ids=[t["name"] for t in BENIGN])
def test_benign_tools_have_no_findings(tool: dict) -> None:
    assert classify_capability("tools", tool) == ()


@pytest.mark.parametrize("prop,expected", [
    ("token", ("secret", "api_token")), ("github_token", ("secret", "api_token")),
    ("accessToken", ("secret", "api_token")), ("apiKey", ("secret", "api_token")),
    ("client_secret", ("secret", "credential")), ("private_key", ("secret", "private_key")),
    ("jwt", ("secret", "jwt")), ("iban", ("pii", "iban")), ("ssn", ("pii", "us_ssn")),
    ("passport_number", ("pii", "national_id")), ("zip_code", ("pii", "address")),
    ("bank_account", ("financial", "bank_account")), ("annual_salary", ("financial", "salary")),
    ("diagnosis", ("health", "diagnosis")), ("medications", ("health", "medication")),
    ("health_insurance_id", ("health", "insurance")),
])
def test_property_vocabulary(prop: str, expected: tuple[str, str]) -> None:
    found = classify_capability("tools", {"name": "t", "inputSchema": {"properties": {prop: {"type": "string"}}}})
    assert (expected[0], expected[1], f"property:/properties/{prop}") in {(f.category, f.type, f.where) for f in found}


@pytest.mark.parametrize("prop", ["max_tokens", "token_count", "page_token", "tokenizer", "keyboard", "key",
                                  "monkey", "emailed_at_version", "addresses_count", "address", "phoneme"])
def test_property_near_misses(prop: str) -> None:
    assert classify_capability("tools", {"name": "t", "inputSchema": {"properties": {prop: {}}}}) == ()


def test_nested_schema_pointers() -> None:
    tool = {"name": "create_order", "inputSchema": {
        "type": "object",
        "properties": {
            "customer": {"type": "object", "properties": {
                "contact": {"type": "object", "properties": {"email": {"type": "string"}}}}},
            "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
            "payer": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"iban": {}}}]},
            "odd/name~x": {"description": "The customer's date of birth"},
        },
        "$defs": {"Line": {"type": "object", "properties": {"card_number": {}}}}}}
    wheres = {(f.type, f.where) for f in classify_capability("tools", tool)}
    assert wheres == {
        ("email", "property:/properties/customer/properties/contact/properties/email"),
        ("iban", "property:/properties/payer/anyOf/1/properties/iban"),
        ("payment_card", "property:/$defs/Line/properties/card_number"),
        ("date_of_birth", "property:/properties/odd~1name~0x"),
    }


def test_resources_templates_and_prompts() -> None:
    assert classify_capability("resources", {"uri": "file:///srv/app/.env", "name": "app config"}) == (
        Finding("secret", "credential", "uri"),)
    assert classify_capability("resources", {"uri": "file:///home/u/.ssh/id_rsa", "name": "id_rsa",
                                             "mimeType": "text/plain"}) == (
        Finding("secret", "private_key", "name"), Finding("secret", "private_key", "uri"))
    assert classify_capability("resourceTemplates", {"uriTemplate": "ehr://patients/{id}/medications",
                                                     "name": "patient medications"}) == (
        Finding("health", "medical_record", "name"), Finding("health", "medical_record", "uri"),
        Finding("health", "medication", "name"), Finding("health", "medication", "uri"))
    prompt = {"name": "summarize_visit", "description": "Summarize a clinic visit.",
              "arguments": [{"name": "visit_id", "required": True},
                            {"name": "notes", "description": "Free text including the diagnosis"},
                            {"name": "customerEmail"}]}
    assert classify_capability("prompts", prompt) == (
        Finding("health", "diagnosis", "argument:notes"), Finding("pii", "email", "argument:customerEmail"))
    assert classify_capability("resources", {"uri": "docs://readme", "name": "README",
                                             "description": "Project documentation"}) == ()


def test_secret_pasted_into_a_description() -> None:
    found = classify_capability("tools", {"name": "s3_put", "description": f"Uploads with key {AWS} by default."})
    assert found == (Finding("secret", "aws_access_key", "description"),)


def test_deterministic_dedup_sorted() -> None:
    tool = {"name": "email_email", "title": "Email", "description": "Email email EMAIL. Phone and email.",
            "inputSchema": {"properties": {"email": {"format": "email"}, "phone": {}}}}
    a, b = classify_capability("tools", tool), classify_capability("tools", dict(reversed(tool.items())))
    assert a == b and len(a) == len(set(a))
    assert list(a) == sorted(a, key=lambda f: (f.category, f.type, f.where))


def test_schema_walk_is_bounded() -> None:
    wide = {"name": "t", "inputSchema": {"properties": {f"email_{i}": {} for i in range(100_000)}}}
    assert 0 < len(classify_capability("tools", wide)) <= 2000
    deep: dict = {"properties": {"ssn": {}}}
    for _ in range(10_000):
        deep = {"properties": {"x": deep}}
    assert classify_capability("tools", {"name": "t", "inputSchema": deep}) == ()
    cyclic: dict = {"properties": {"email": {}}}
    cyclic["properties"]["self"] = cyclic
    cyclic["items"] = [cyclic, cyclic]
    assert {f.type for f in classify_capability("tools", {"name": "t", "inputSchema": cyclic})} == {"email"}
    assert all(len(f.where) <= 256 for f in classify_capability(
        "tools", {"name": "t", "inputSchema": {"properties": {"e" * 10_000 + "_email": {}}}}))


CAPABILITY_JUNK: list[object] = [None, [], "tool", 5, {}, {"name": None}, {"name": 5, "description": ["x"]},
                                 {"inputSchema": []}, {"inputSchema": {"properties": []}},
                                 {"inputSchema": {"properties": {"a": None, "b": [], "c": {"format": 5}}}},
                                 {"inputSchema": {"properties": {1: {}}, "items": "x", "anyOf": {"a": 1}}},
                                 {"arguments": [None, 1, {"name": 5}, {"name": "x", "description": {}}]},
                                 {"arguments": {"name": "email"}}, {"annotations": "x", "uri": 5, "uriTemplate": None},
                                 {"name": "\ud800email\x00", "description": "\u200b" * 10}]


@pytest.mark.parametrize("entry", CAPABILITY_JUNK, ids=[f"junk{i}" for i in range(len(CAPABILITY_JUNK))])
def test_classify_junk_never_raises(entry: object) -> None:
    found = classify_capability("tools", entry)  # type: ignore[arg-type]
    assert isinstance(found, tuple) and all(isinstance(f, Finding) for f in found)


def test_categories() -> None:
    assert categories([Finding("pii", "email", "name"), Finding("health", "diagnosis", "uri"),
                       Finding("pii", "phone", "name")]) == ["health", "pii"]
    assert categories({"pii.email": 2, "secret.jwt": 1, "financial.salary": 0}) == ["pii", "secret"]
    assert categories({}) == [] and categories(()) == []
