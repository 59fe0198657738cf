"""Which published capabilities touch sensitive data, and how much of it a response carries.

Two pure entry points, both total (they never raise, whatever JSON shape they are given):

* `classify_capability(kind, entry)` looks at what an MCP server *publishes* about a tool, resource,
  resource template or prompt (names, titles, descriptions, URIs, schema property names and JSON
  Schema `format`, prompt arguments) and answers with deduplicated, sorted `Finding`s.
* `scan_response(doc)` counts sensitive *values* in a response body (and values under object keys
  named like sensitive fields, e.g. ``{"password": "..."}``) and returns only counts keyed
  ``"category.type"``: no matched value is returned or kept. It is bounded by `max_bytes` of string
  data, `max_depth` of nesting, a node budget derived from `max_bytes` and at most 4096 phone-number
  validations; `scan(doc)` answers the same with how many characters it read and whether a bound
  cut it short.

Libraries do the checksums: `python-stdnum` (Luhn for payment cards, IBAN mod-97 with per-country
lengths, US SSN area/group/serial rules and its list of known-invalid numbers, Brazil CPF, Spain DNI,
India Aadhaar (Verhoeff), Italy codice fiscale, France NIR) and `phonenumbers` (installed as the
metadata-only `phonenumberslite`) decides whether a phone-shaped candidate is a valid number.

Hand-written, because no light library does it: the candidate regexes (each anchored by look-behinds
so that a scan is linear in the text, and requiring the shapes people write: separators for national
phone numbers, ``+`` for international ones, dashes for SSNs, dots/dash for CPF, spaces for Aadhaar
and NIR), the card-network prefix/length table (stdnum has Luhn but no IIN table), the secret token
formats (AWS key ids, PEM private keys, JWTs whose header decodes to a JSON object, GitHub, GitLab,
Slack, Stripe, OpenAI/Anthropic-style, Google, npm, PyPI and Hugging Face tokens, ``password=...``
assignments, credentials in URLs), and the vocabulary of field/capability words (``card_number``,
``date_of_birth``, ``salary``, ``diagnosis``...). detect-secrets covers the token formats but is
built to scan files into a baseline of the secrets themselves (and its entropy plugins fire on
hashes and ids); Presidio/spaCy need language models. One table here is smaller and keeps nothing.
Words are matched as whole tokens of the split identifier or text ("tokenizer" is not "token", and
"token" alone only counts next to a credential word such as access/api/auth/bearer, so
``max_tokens`` and ``page_token`` stay quiet).

Not detected: national-format phone numbers outside the NANP (``+`` numbers from any country are),
national ids without a distinctive printed shape (a bare 9- or 11-digit number is not flagged unless
it sits under a key such as ``ssn``), names, addresses and dates of birth inside free text.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.br import cpf as _cpf
from stdnum.es import dni as _dni
from stdnum.fr import nir as _nir
from stdnum.in_ import aadhaar as _aadhaar
from stdnum.it import codicefiscale as _codicefiscale
from stdnum.us import ssn as _ssn

__all__ = ["Finding", "ScanResult", "classify_capability", "scan", "scan_response", "categories"]


@dataclass(frozen=True, slots=True)
class Finding:
    category: str   # "pii" | "secret" | "financial" | "health"
    type: str       # "email", "payment_card", "api_token", "salary", "diagnosis", ...
    where: str      # "name" | "description" | "title" | "uri" | "property:/properties/a" | "format:/properties/a"
                    # | "output-property:..." | "output-format:..." | "argument:NAME" | "response"


# --- vocabulary: word sequences of split identifiers and text --------------------------------------

_TERMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("pii", "email"): ("email", "e mail", "emailaddress"),
    ("pii", "phone"): ("phone", "telephone", "phonenumber", "mobile number", "mobile phone", "cell phone",
                       "msisdn"),
    ("pii", "us_ssn"): ("ssn", "social security"),
    ("pii", "national_id"): ("passport", "driver license", "driver licence", "driving license",
                             "driving licence", "national id", "national identity", "national insurance number",
                             "nino", "tax id", "taxpayer id", "aadhaar", "identity card", "id card",
                             "identity document"),
    ("pii", "date_of_birth"): ("date of birth", "dob", "birthdate", "birth date", "birthday"),
    ("pii", "address"): ("home address", "street address", "postal address", "mailing address",
                         "billing address", "shipping address", "residential address", "street",
                         "address line", "postcode", "postal code", "zip code", "zipcode"),
    ("pii", "person_name"): ("first name", "last name", "full name", "surname", "given name",
                             "family name", "maiden name", "firstname", "lastname", "fullname"),
    # records about people: a CRM's customers, an HR system's employees (data subjects under GDPR)
    ("pii", "personal_record"): ("customer", "client record", "employee", "user profile", "member profile",
                                 "personal data", "personal information", "personally identifiable",
                                 "contact detail", "contact information", "data subject"),
    ("pii", "payment_card"): ("credit card", "creditcard", "debit card", "card number", "cardnumber",
                              "cc number", "cvv", "cvc", "payment card"),
    ("pii", "iban"): ("iban",),
    ("secret", "password"): ("password", "passwd", "passphrase"),
    ("secret", "credential"): ("credential", "secret", "access key", "secret key", "signing key",
                               "encryption key", "master key", "aws secret", "get env", "print env",
                               "read env", "dump env", "list env", "show env", "env var", "env variable",
                               "environment variable", "printenv", "getenv", "dotenv", "environ", "env file",
                               "kubeconfig", "connection string"),
    ("secret", "aws_access_key"): ("aws access key", "access key id"),
    ("secret", "private_key"): ("private key", "ssh key", "id rsa", "id ed25519", "id ecdsa", "id dsa"),
    ("secret", "jwt"): ("jwt", "id token"),
    ("secret", "api_token"): ("api key", "apikey", "api token", "apitoken", "access token", "accesstoken",
                              "auth token", "authtoken", "refresh token", "bearer token", "bearer",
                              "session token", "oauth token", "personal access token", "bot token",
                              "github token", "slack token", "client token", "service token",
                              "secret token", "webhook token", "private token"),
    ("financial", "bank_account"): ("bank account", "account number", "routing number", "sort code",
                                    "swift code", "bic code", "bank details"),
    ("financial", "payment"): ("payment", "refund", "payout", "invoice", "billing", "wire transfer",
                               "bank transfer", "money transfer", "transaction history", "account balance",
                               "chargeback"),
    ("financial", "salary"): ("salary", "salaries", "payroll", "wage", "compensation", "income", "paycheck",
                              "payslip"),
    ("financial", "tax"): ("tax", "tax return"),
    ("financial", "credit"): ("credit score", "credit report", "credit history", "loan", "mortgage"),
    ("health", "diagnosis"): ("diagnosis", "diagnoses", "symptom", "allergy", "allergies", "disease",
                              "lab result", "blood type", "mental health", "icd"),
    ("health", "medical_record"): ("medical", "patient", "health record", "ehr", "emr", "phi", "hipaa",
                                   "clinical"),
    ("health", "medication"): ("medication", "prescription", "drug", "dosage"),
    ("health", "insurance"): ("insurance", "insurer"),
}

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_MAX_TEXT = 16 * 1024        # characters of one name/description looked at
_MAX_WORDS = 4096


def _singular(w: str) -> str:
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


_PHRASES: dict[str, list[tuple[tuple[str, ...], tuple[str, str]]]] = {}
for _key, _words_list in _TERMS.items():
    for _w in _words_list:
        _seq = tuple(_singular(x) for x in _w.split())
        _PHRASES.setdefault(_seq[0], []).append((_seq, _key))
for _lst in _PHRASES.values():
    _lst.sort(key=lambda p: -len(p[0]))          # longest phrase first at each position


def _words(text: str) -> list[str]:
    text = text[:_MAX_TEXT].replace("'", "").replace("\u2019", "")
    return [_singular(m.group().lower()) for m in _WORD.finditer(text)][:_MAX_WORDS]


def _term_hits(text: str, *, whole_name: bool, head_only: bool = False) -> set[tuple[str, str]]:
    """(category, type) of the vocabulary phrases in `text`. `whole_name`: a lone "token" names a
    credential (a property called ``token``); `head_only`: only a phrase ending the text counts
    (``password`` yes, ``password_hint`` no)."""
    words = _words(text)
    hits: set[tuple[str, str]] = set()
    if whole_name and words == ["token"]:
        hits.add(("secret", "api_token"))
    for i, w in enumerate(words):
        for seq, key in _PHRASES.get(w, ()):
            n = len(seq)
            if tuple(words[i:i + n]) == seq and (not head_only or i + n == len(words)):
                hits.add(key)
                break
    return hits


# Sensitive paths named in URIs, file names and descriptions.
_PATHS: tuple[tuple[re.Pattern[str], tuple[str, str]], ...] = (
    (re.compile(r"(?:^|[\s/\"'`(~=:])\.env(?:\.[a-z]+)?(?![\w.-])", re.I), ("secret", "credential")),
    (re.compile(r"\.ssh/|~/\.ssh\b|\bid_(?:rsa|dsa|ecdsa|ed25519)\b", re.I), ("secret", "private_key")),
    (re.compile(r"\.aws/credentials|\.netrc\b|\.pgpass\b|\.npmrc\b|\.pypirc\b|\.git-credentials"
                r"|\.docker/config\.json|\.kube/config|/etc/shadow\b", re.I), ("secret", "credential")),
)


def _path_hits(text: str) -> set[tuple[str, str]]:
    text = text[:_MAX_TEXT]
    return {key for rx, key in _PATHS if rx.search(text)}


# --- value detectors ---------------------------------------------------------------------------------

_FILE_EXTS = frozenset("png jpg jpeg gif svg webp ico bmp tif tiff js mjs ts css map json txt md py rb go rs "
                       "java html htm xml yaml yml toml lock log".split())


def _email_ok(m: re.Match[str]) -> bool:
    return m.group(1).lower() not in _FILE_EXTS


def _card_ok(m: re.Match[str]) -> bool:
    return _card_digits_ok(re.sub(r"[ -]", "", m.group()))


def _card_digits_ok(d: str) -> bool:
    """Luhn (stdnum) plus a card network's prefix and length (Visa, Mastercard, Amex, Discover,
    UnionPay, JCB, Diners)."""
    n = len(d)
    if not 12 <= n <= 19:
        return False
    if len(set(d)) == 1 or not _luhn.is_valid(d):
        return False
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    return ((d[0] == "4" and n in (13, 16, 19))
            or ((51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16)
            or (p2 in (34, 37) and n == 15)
            or ((p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925 or p2 == 62)
                and 16 <= n <= 19)
            or (3528 <= p4 <= 3589 and 16 <= n <= 19)
            or ((300 <= p3 <= 305 or p4 == 3095 or p2 in (36, 38, 39)) and 14 <= n <= 19))


def _jwt_ok(m: re.Match[str]) -> bool:
    head = m.group(1)
    if len(head) > 4096:
        return False
    try:
        obj = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and ("alg" in obj or "typ" in obj)


_PLACEHOLDERS = frozenset({"null", "none", "nil", "true", "false", "undefined", "redacted", "<redacted>",
                           "[redacted]", "changeme", "example", "string", "your-password", "your_password",
                           "password", "secret", "required", "optional", "n/a", "tbd", "xxx"})


def _placeholder(v: str) -> bool:
    v = v.strip().strip("\"'").lower()
    return (not v or v in _PLACEHOLDERS or len(set(v)) == 1 or v[0] in "<{$%["
            or v.startswith(("process.env", "os.environ", "env.")))


def _kv_ok(m: re.Match[str]) -> bool:
    return not _placeholder(m.group("v"))


def _ssn_ok(m: re.Match[str]) -> bool:
    return bool(_ssn.is_valid(m.group()))


def _iban_ok(m: re.Match[str]) -> bool:
    return bool(_iban.is_valid(m.group()))


def _national_ok(m: re.Match[str]) -> bool:
    s = m.group()
    if "." in s:
        return bool(_cpf.is_valid(s))
    if s[:1].isalpha():
        return bool(_codicefiscale.is_valid(s))
    if s[-1:].isalpha():
        return bool(_dni.is_valid(s))
    if len(s) == 14:                       # "2341 2341 2346"
        return bool(_aadhaar.is_valid(s))
    return bool(_nir.is_valid(s.replace(" ", "")))


_KV_KEY = r"password|passwd|passphrase|secret|api[_-]?key|apikey|access[_-]?token|auth[_-]?token|private[_-]?key"
_KV_TYPE = {"password": "password", "passwd": "password", "passphrase": "password", "secret": "credential"}

# (key, pattern, substrings one of which must occur (in the lower-cased text for (?i) patterns; ()
# means any text), validator). Earlier entries win overlapping matches. Every alternative starts with
# a literal or a character class and checks what precedes it with a look-behind *after* that first
# character: `re` then skips ahead to candidate characters, several times faster than a leading
# look-behind on text without candidates.
_Detector = tuple[str, re.Pattern[str], tuple[str, ...], Callable[[re.Match[str]], bool] | None]
_NOT_AFTER_WORD = r"(?<![\w-].)"     # placed after a first character: that character did not continue a word
_PHONE_END = r"(?![\w-]|\.\d)"
_DETECTORS: tuple[_Detector, ...] = (
    ("secret.private_key", re.compile(r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"), ("-----BEGIN",), None),
    ("secret.jwt", re.compile(r"(eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{5,})\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
     ("eyJ",), _jwt_ok),
    ("secret.aws_access_key", re.compile(r"A(?<![A-Za-z0-9].)(?:KIA|SIA|BIA|CCA)[A-Z2-7]{16}(?![A-Za-z0-9])"),
     ("AKIA", "ASIA", "ABIA", "ACCA"), None),
    ("secret.api_token", re.compile(
        r"(?:g" + _NOT_AFTER_WORD + r"(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_[A-Za-z0-9_]{50,255}"
        r"|lpat-[A-Za-z0-9_-]{20,64})"
        r"|x" + _NOT_AFTER_WORD + r"ox[abposr]-[A-Za-z0-9-]{10,250}"
        r"|[sr]" + _NOT_AFTER_WORD + r"k_(?:live|test)_[A-Za-z0-9]{16,247}"
        r"|w" + _NOT_AFTER_WORD + r"hsec_[A-Za-z0-9+/]{24,}"
        r"|s" + _NOT_AFTER_WORD + r"k-(?:proj-|ant-)?[A-Za-z0-9_-]{32,255}"
        r"|A" + _NOT_AFTER_WORD + r"Iza[0-9A-Za-z_-]{35}"
        r"|n" + _NOT_AFTER_WORD + r"pm_[A-Za-z0-9]{36}"
        r"|p" + _NOT_AFTER_WORD + r"ypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"
        r"|h" + _NOT_AFTER_WORD + r"f_[A-Za-z]{34})(?![\w-])"
        r"|https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"),
     ("gh", "github_pat_", "glpat-", "xox", "k_live_", "k_test_", "whsec_", "sk-", "AIza", "npm_", "pypi-", "hf_",
      "hooks.slack.com"), None),
    ("secret.kv", re.compile(
        r"(?i)(?P<k>" + _KV_KEY + r")(?![a-z0-9])[\"']?\s{0,4}[:=]\s{0,4}[\"']?(?P<v>[^\s\"',;{}]{4,200})"),
     ("pass", "secret", "key", "token"), _kv_ok),
    ("secret.credential", re.compile(r"(?i)[a-z](?<![\w+.-].)[a-z0-9+.-]{1,20}://[^\s/:@\"']{1,128}:[^\s/@\"']{1,128}@"
                                     r"[\w.-]"), ("://",), None),
    ("secret.api_token", re.compile(r"(?i)bearer(?<![a-z0-9]bearer)\s+[A-Za-z0-9._~+/-]{20,}=*"), ("bearer",), None),
    ("pii.email", re.compile(r"[A-Za-z0-9](?<![\w.%+-].)[A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                             r"[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![\w-])"), ("@",), _email_ok),
    ("pii.iban", re.compile(r"[A-Z](?<![A-Za-z0-9].)[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
                            r"(?![A-Za-z0-9])"), (), _iban_ok),
    ("pii.payment_card", re.compile(r"[0-9](?<![\d.-].)(?:[ -]?[0-9]){11,18}(?![\d-]|\.\d)"), (), _card_ok),
    ("pii.us_ssn", re.compile(r"[0-9](?<![\d-].)[0-9]{2}-[0-9]{2}-[0-9]{4}(?![\d-])"), ("-",), _ssn_ok),
    ("pii.national_id", re.compile(
        r"[0-9](?<![\d.].)[0-9]{2}\.[0-9]{3}\.[0-9]{3}-[0-9]{2}(?![\d-])"                     # BR CPF
        r"|[0-9](?<![A-Za-z0-9].)[0-9]{7}-?[A-HJ-NP-TV-Z](?![A-Za-z0-9])"                     # ES DNI
        r"|[2-9](?<!\d.)(?<!\d .)[0-9]{3} [0-9]{4} [0-9]{4}(?! ?\d)"                           # IN Aadhaar
        r"|[A-Z](?<![A-Za-z0-9].)[A-Z]{5}[0-9]{2}[A-EHLMPR-T][0-9]{2}[A-Z][0-9]{3}[A-Z](?![A-Za-z0-9])"  # IT CF
        r"|[12](?<!\d.)(?<!\d .) [0-9]{2} [0-9]{2} (?:[0-9]{2}|2[AB]) [0-9]{3} [0-9]{3} [0-9]{2}(?! ?\d)"),  # FR NIR
     (), _national_ok),
    ("pii.phone", re.compile(                 # validated by the scanner (phonenumbers, cached and capped)
        r"\+(?<![\w+().-].)[0-9][0-9 ().-]{5,20}[0-9]" + _PHONE_END +                       # international
        r"|\((?<![\w+().-].)[0-9]{3}\) ?[0-9]{3}[ .-][0-9]{4}" + _PHONE_END +                 # (415) 555-2671
        r"|1(?<![\w+().-].)[ .-](?:\([0-9]{3}\) ?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}" + _PHONE_END +
        r"|[0-9](?<![\w+().-].)[0-9]{2}[ .-][0-9]{3}[ .-][0-9]{4}" + _PHONE_END), (), None),
)
_HAS_DIGIT = re.compile(r"[0-9]")
_DIGIT_KEYS = frozenset({"pii.iban", "pii.payment_card", "pii.us_ssn", "pii.national_id", "pii.phone"})
# The table prepared for the scan loop: (key, pattern, prefilter or None, validator, prefilter on the
# lower-cased text, needs a digit).
_PREPARED = tuple(
    (key, rx, re.compile("|".join(map(re.escape, needles))) if needles else None, ok,
     bool(rx.flags & re.IGNORECASE), key in _DIGIT_KEYS)
    for key, rx, needles, ok in _DETECTORS)
_MAX_PHONE_CHECKS = 4096


# --- scanning responses ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ScanResult:
    counts: dict[str, int]     # "category.type" -> how many
    scanned_chars: int         # characters of strings and keys looked at (at most max_bytes)
    truncated: bool            # a bound (bytes, depth, nodes) cut the scan short


class _Scanner:
    def __init__(self, max_bytes: int, max_depth: int) -> None:
        self.budget = max(0, max_bytes)
        self.max_depth = max(0, max_depth)
        self.nodes = max(1024, self.budget // 8)     # a JSON value costs at least a few bytes
        self.scanned = 0
        self.truncated = False
        self.counts: Counter[str] = Counter()
        self._phones: dict[str, bool] = {}
        self._keys: dict[str, str | None] = {}

    def key_type(self, key: str) -> str | None:
        """What a response key names (e.g. "secret.password"), memoised for this scan only."""
        key = self.take(key)
        if key not in self._keys:
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[key] = _key_type(key)
        return self._keys[key]

    def take(self, s: str) -> str:
        if len(s) > self.budget:
            self.truncated = True
            s = s[:self.budget]
        self.budget -= len(s)
        self.scanned += len(s)
        return s

    def phone_ok(self, cand: str, *, bare: bool = False) -> bool:
        """phonenumbers is the costly validator: results are cached, and checks capped per scan."""
        memo = ("bare:" if bare else "") + cand
        if memo in self._phones:
            return self._phones[memo]
        if len(self._phones) >= _MAX_PHONE_CHECKS:
            self.truncated = True
            return False
        ok = self._phones[memo] = _valid_phone(cand, bare=bare)
        return ok

    def text(self, s: str) -> Counter[str]:
        """Counts of value detections in one string, overlapping matches resolved by detector order."""
        found: Counter[str] = Counter()
        if len(s) < 6:
            return found
        taken: bytearray | None = None     # positions already counted by an earlier detector
        has_digit = _HAS_DIGIT.search(s) is not None
        lower: str | None = None
        for key, rx, needle, ok, folded, digits in _PREPARED:
            if digits and not has_digit:
                continue
            if needle is not None:
                if folded:
                    lower = s.lower() if lower is None else lower
                if needle.search(lower if folded else s) is None:  # type: ignore[arg-type]
                    continue
            for m in rx.finditer(s):
                a, b = m.span()
                if taken is not None and taken.find(1, a, b) != -1:
                    continue
                if not (self.phone_ok(m.group()) if key == "pii.phone" else ok is None or ok(m)):
                    continue
                if taken is None:
                    taken = bytearray(len(s))
                taken[a:b] = b"\x01" * (b - a)
                if key == "secret.kv":
                    k = re.sub(r"[_-]", "", m.group("k").lower())
                    found["secret." + _KV_TYPE.get(k, "private_key" if k == "privatekey" else "api_token")] += 1
                else:
                    found[key] += 1
        return found


def _valid_phone(cand: str, *, bare: bool) -> bool:
    digits = re.sub(r"\D", "", cand)
    if not 8 <= len(digits) <= 15 or re.fullmatch(r"\+?\d{4}-\d{2}-\d{2}", cand):
        return False
    tries = [cand]
    if cand.startswith("+"):                      # "+1 650 253 0000 2024": drop trailing groups
        parts = re.split(r"[ .-]", cand)
        tries += [" ".join(parts[:k]) for k in range(len(parts) - 1, max(1, len(parts) - 3), -1)]
    for t in tries:
        try:
            num = phonenumbers.parse(t, None if t.startswith("+") else "US")
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            return True
        if bare:
            break
    return False


# Response keys whose value is itself the sensitive datum (the value's shape proves nothing).
_KEY_DECIDED = frozenset({"pii.date_of_birth", "pii.address", "pii.national_id", "pii.person_name"})


def _key_type(key: str) -> str | None:
    hits = _term_hits(key, whole_name=True, head_only=True)
    if not hits:
        return None
    cat, typ = min(hits)
    return f"{cat}.{typ}"


def _present(v: Any) -> bool:
    if isinstance(v, bool) or v is None:
        return False
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, str) and not _placeholder(v)


def _scalar_text(v: Any, limit: int) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        try:
            return bytes(v[:limit]).decode("utf-8", "replace")
        except (TypeError, ValueError, BufferError, NotImplementedError):
            return None
    return None


def scan(doc: Any, *, max_bytes: int = 1 << 20, max_depth: int = 32) -> ScanResult:
    """`scan_response` with what was looked at: characters scanned and whether a bound cut it short.
    Walks in document order with an explicit stack (no recursion), so any nesting is safe."""
    sc = _Scanner(max_bytes, max_depth)
    stack: list[tuple[Any, int, str | None]] = [(doc, 0, None)]
    while stack:
        if sc.budget <= 0 or sc.nodes <= 0:
            sc.truncated = True
            break
        node, depth, ktype = stack.pop()
        sc.nodes -= 1
        if isinstance(node, (dict, list, tuple)) and depth >= sc.max_depth:
            sc.truncated = True
        elif isinstance(node, dict):
            children: list[tuple[Any, int, str | None]] = []
            for k, v in node.items():
                if sc.budget <= 0 or len(children) >= sc.nodes:
                    sc.truncated = True
                    break
                kt = sc.key_type(k) if isinstance(k, str) else None
                children.append((v, depth + 1, kt))
            stack.extend(reversed(children))
        elif isinstance(node, (list, tuple)):
            if len(node) > sc.nodes:
                sc.truncated = True
            stack.extend((v, depth + 1, ktype) for v in reversed(node[:sc.nodes]))
        else:
            _scan_scalar(sc, node, ktype)
        if len(stack) > sc.nodes:              # what lies deeper than the remaining node budget is never reached
            del stack[:len(stack) - sc.nodes]
            sc.truncated = True
    return ScanResult(dict(sorted(sc.counts.items())), sc.scanned, sc.truncated)


def _scan_scalar(sc: _Scanner, node: Any, ktype: str | None) -> None:
    s = _scalar_text(node, sc.budget)
    found: Counter[str] = sc.text(sc.take(s)) if s is not None else Counter()
    if ktype is not None and not found:
        raw = s if s is not None else (str(node) if isinstance(node, int) and not isinstance(node, bool)
                                       and -10 ** 20 < node < 10 ** 20 else None)
        bare = re.sub(r"[\s-]", "", raw[:64]) if raw is not None else ""
        if ktype == "pii.us_ssn" and bare.isdigit() and _ssn.is_valid(bare):
            found[ktype] += 1
        elif ktype == "pii.phone" and bare.lstrip("+").isdigit() and sc.phone_ok(bare, bare=True):
            found[ktype] += 1
        elif ktype == "pii.payment_card" and bare.isdigit() and _card_digits_ok(bare):
            found[ktype] += 1
        elif (ktype in _KEY_DECIDED or not ktype.startswith("pii.")) and _present(node):
            found[ktype] += 1
    elif ktype is not None and ktype.startswith("secret.") and _present(node) \
            and not any(k.startswith("secret.") for k in found):
        found[ktype] += 1
    sc.counts.update(found)


def scan_response(doc: Any, *, max_bytes: int = 1 << 20, max_depth: int = 32) -> dict[str, int]:
    """Counts of sensitive values in a response, keyed "category.type" (e.g. {"pii.email": 2}).
    Never returns or keeps a matched value; bounded by max_bytes of strings and max_depth nesting."""
    return scan(doc, max_bytes=max_bytes, max_depth=max_depth).counts


# --- classifying published capabilities --------------------------------------------------------------

_MAX_SCHEMA_NODES = 2000
_MAX_SCHEMA_DEPTH = 24
_MAX_WHERE = 256
_FORMATS = {"email": ("pii", "email"), "idn-email": ("pii", "email"), "phone": ("pii", "phone"),
            "tel": ("pii", "phone"), "password": ("secret", "password"), "iban": ("pii", "iban"),
            "credit-card": ("pii", "payment_card"), "creditcard": ("pii", "payment_card")}
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SCHEMA_ONE = ("items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "contains",
               "not", "if", "then", "else", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems", "items")


def _ptr_token(s: str) -> str:
    s = s.replace("~", "~0").replace("/", "~1")
    return "".join(c if c.isprintable() else "?" for c in s[:64])


def _secret_values(text: str) -> set[tuple[str, str]]:
    """Secrets written into published text (a key pasted into a description)."""
    counts = _Scanner(_MAX_TEXT, 1).text(text[:_MAX_TEXT])
    return {tuple(k.split(".", 1)) for k in counts if k.startswith("secret.")}  # type: ignore[misc]


_RECORD_WHERE = frozenset({"name", "title", "description", "uri"})


def _text(out: set[Finding], value: Any, where: str, *, name: bool = False, uri: bool = False) -> None:
    if not isinstance(value, str) or not value:
        return
    hits = _term_hits(value, whole_name=name)
    if where not in _RECORD_WHERE:
        hits.discard(("pii", "personal_record"))     # a `customer_id` property is a key, not a record
    if uri or name:
        hits |= _path_hits(value)
    else:
        hits |= _path_hits(value) | _secret_values(value)
    out.update(Finding(c, t, where[:_MAX_WHERE]) for c, t in hits)


def _schema(out: set[Finding], schema: Any, prefix: str) -> None:
    fmt_prefix = "output-format:" if prefix.startswith("output") else "format:"
    stack: list[tuple[Any, str, int]] = [(schema, "", 0)]
    budget = _MAX_SCHEMA_NODES
    while stack and budget > 0:
        node, ptr, depth = stack.pop()
        budget -= 1
        if not isinstance(node, dict) or depth > _MAX_SCHEMA_DEPTH:
            continue
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt.lower() in _FORMATS:
            c, t = _FORMATS[fmt.lower()]
            out.add(Finding(c, t, (fmt_prefix + ptr)[:_MAX_WHERE]))
        where = prefix + ptr
        _text(out, node.get("description"), where)
        _text(out, node.get("title"), where, name=True)
        for kw in _SCHEMA_MAPS:
            sub = node.get(kw)
            if not isinstance(sub, dict):
                continue
            for i, (k, v) in enumerate(sub.items()):
                if i >= budget or not isinstance(k, str):
                    break
                child = f"{ptr}/{kw}/{_ptr_token(k)}"
                if kw == "properties":
                    _text(out, k, prefix + child, name=True)
                stack.append((v, child, depth + 1))
        for kw in _SCHEMA_ONE:
            if isinstance(node.get(kw), dict):
                stack.append((node[kw], f"{ptr}/{kw}", depth + 1))
        for kw in _SCHEMA_LISTS:
            sub = node.get(kw)
            if isinstance(sub, list):
                stack.extend((v, f"{ptr}/{kw}/{i}", depth + 1) for i, v in enumerate(sub[:budget]))


def classify_capability(kind: str, entry: dict[str, Any]) -> tuple[Finding, ...]:
    """Sensitive-data findings for one published tool, resource, resource template or prompt.
    `kind` is "tools" | "resources" | "resourceTemplates" | "prompts"; every field is optional and
    any JSON shape is accepted. Deterministic, deduplicated, sorted; never raises."""
    out: set[Finding] = set()
    if not isinstance(entry, dict):
        return ()
    _text(out, entry.get("name"), "name", name=True)
    _text(out, entry.get("title"), "title", name=True)
    ann = entry.get("annotations")
    if isinstance(ann, dict):
        _text(out, ann.get("title"), "title", name=True)
    _text(out, entry.get("description"), "description")
    for key in ("uri", "uriTemplate"):
        _text(out, entry.get(key), "uri", uri=True)
    _schema(out, entry.get("inputSchema"), "property:")
    _schema(out, entry.get("outputSchema"), "output-property:")
    args = entry.get("arguments")
    if isinstance(args, list):
        for arg in args[:_MAX_SCHEMA_NODES]:
            if isinstance(arg, dict) and isinstance(arg.get("name"), str):
                where = "argument:" + _ptr_token(arg["name"])
                _text(out, arg["name"], where, name=True)
                _text(out, arg.get("title"), where, name=True)
                _text(out, arg.get("description"), where)
    return tuple(sorted(out, key=lambda f: (f.category, f.type, f.where)))


def categories(findings: Iterable[Finding] | dict[str, int]) -> list[str]:
    """Sorted distinct categories of findings, or of `scan_response` counts (those above zero)."""
    if isinstance(findings, dict):
        return sorted({k.split(".", 1)[0] for k, n in findings.items()
                       if isinstance(k, str) and isinstance(n, int) and n > 0})
    return sorted({f.category for f in findings if isinstance(f, Finding)})
