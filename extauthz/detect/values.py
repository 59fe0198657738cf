"""Sensitive values in text: candidate regexes, validated by checksum libraries (python-stdnum,
phonenumbers) where a number has one. Only counts leave this module, never a matched value."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from collections.abc import Callable

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.br import cpf as _cpf
from stdnum.es import dni as _dni
from stdnum.fr import nir as _nir
from stdnum.in_ import aadhaar as _aadhaar
from stdnum.it import codicefiscale as _codicefiscale
from stdnum.us import ssn as _ssn

__all__ = ["ValueMatcher", "card_digits_ok", "placeholder", "ssn_ok"]

_FILE_EXTS = frozenset("png jpg jpeg gif svg webp ico bmp tif tiff js mjs ts css map json txt md py rb go rs "
                       "java html htm xml yaml yml toml lock log".split())


def _email_ok(m: re.Match[str]) -> bool:
    return m.group(1).lower() not in _FILE_EXTS


def _card_ok(m: re.Match[str]) -> bool:
    return card_digits_ok(re.sub(r"[ -]", "", m.group()))


def card_digits_ok(d: str) -> bool:
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


def placeholder(v: str) -> bool:
    v = v.strip().strip("\"'").lower()
    return (not v or v in _PLACEHOLDERS or len(set(v)) == 1 or v[0] in "<{$%["
            or v.startswith(("process.env", "os.environ", "env.")))


def _kv_ok(m: re.Match[str]) -> bool:
    return not placeholder(m.group("v"))


def ssn_ok(digits: str) -> bool:
    return bool(_ssn.is_valid(digits))


def _ssn_ok(m: re.Match[str]) -> bool:
    return ssn_ok(m.group())


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


class ValueMatcher:
    """Value detections in strings. phonenumbers is the costly validator: its results are cached
    and its checks capped per matcher (`truncated` says a cap was hit)."""

    def __init__(self) -> None:
        self.truncated = False
        self._phones: dict[str, bool] = {}

    def phone_ok(self, cand: str, *, bare: bool = False) -> bool:
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
