"""The vocabulary of sensitive fields and capabilities, matched as whole words of split
identifiers and text (see docs/detection.md for what is and is not covered)."""

from __future__ import annotations

import re

__all__ = ["MAX_TEXT", "path_hits", "split_words", "term_hits"]

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
MAX_TEXT = 16 * 1024        # characters of one name/description looked at
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


def split_words(text: str) -> list[str]:
    text = text[:MAX_TEXT].replace("'", "").replace("\u2019", "")
    return [_singular(m.group().lower()) for m in _WORD.finditer(text)][:_MAX_WORDS]


def term_hits(text: str, *, whole_name: bool, head_only: bool = False) -> set[tuple[str, str]]:
    """(category, type) of the vocabulary phrases in `text`. `whole_name`: a lone "token" names a
    credential (a property called ``token``); `head_only`: only a phrase ending the text counts
    (``password`` yes, ``password_hint`` no)."""
    words = split_words(text)
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


def path_hits(text: str) -> set[tuple[str, str]]:
    text = text[:MAX_TEXT]
    return {key for rx, key in _PATHS if rx.search(text)}


