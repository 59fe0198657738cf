"""Name and URI hygiene: a name is compared exactly, so it must first be unambiguous."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
# Encoded dots, slashes, backslashes, NUL and percent itself (double encoding) change meaning
# once some later component decodes them.
_BAD_ESCAPE = re.compile(r"%(?:2[eEfF]|5[cC]|00|25)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
MAX_NAME = 1024
MAX_URI = 8192


def name_problem(name: object) -> str | None:
    """Why a tool/prompt name is unacceptable, or None."""
    if type(name) is not str:
        return "name must be a string"
    if not name or len(name) > MAX_NAME:
        return "name empty or too long"
    if _CONTROL.search(name):
        return "name contains control or invisible characters"
    if not name.isascii() and not unicodedata.is_normalized("NFC", name):
        return "name is not in Unicode NFC form"
    return None


def uri_problem(uri: object) -> str | None:
    """Why a resource URI is unacceptable, or None. Traversal and encoded tricks are refused
    rather than normalised: a URI whose normalisation would change it is not the URI it claims."""
    if type(uri) is not str:
        return "uri must be a string"
    if not uri or len(uri) > MAX_URI:
        return "uri empty or too long"
    if _CONTROL.search(uri) or "\\" in uri:
        return "uri contains control characters or backslashes"
    if not uri.isascii() and not unicodedata.is_normalized("NFC", uri):
        return "uri is not in Unicode NFC form"
    if not _SCHEME.match(uri):
        return "uri has no scheme"
    if _BAD_ESCAPE.search(uri):
        return "uri contains percent-encoded dots, slashes or escapes"
    path = uri.split("?", 1)[0].split("#", 1)[0]
    for seg in path.split("/"):
        if seg in (".", ".."):
            return "uri contains dot segments"
    return None
