"""Name and URI hygiene: a name is compared exactly, so it must first be unambiguous."""

from __future__ import annotations

import re
import unicodedata

import regex

# Characters a reader cannot see or that change how text around them reads, by Unicode property
# rather than by a list of ranges: Default_Ignorable_Code_Point (soft hyphen, zero-width and bidi
# controls, variation selectors, tag characters, U+034F, U+180E, Hangul fillers), the control,
# format, surrogate, private-use and unassigned categories, line/paragraph separators, and every
# space other than U+0020.
_INVISIBLE = regex.compile(
    r"(?V1)[\p{Default_Ignorable_Code_Point}\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}[\p{Zs}--\x20]]")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")       # the whole class within ASCII
# Encoded dots, slashes, backslashes, NUL and percent itself (double encoding) change meaning
# once some later component decodes them.
_BAD_ESCAPE = re.compile(r"%(?:2[eEfF]|5[cC]|00|25)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
MAX_NAME = 1024
MAX_URI = 8192


def invisible(text: str) -> bool:
    """True if `text` holds a control or invisible character (ASCII is checked without regex)."""
    if text.isascii():
        return _ASCII_CONTROL.search(text) is not None
    return _INVISIBLE.search(text) is not None


def name_problem(name: object) -> str | None:
    """Why a tool/prompt name is unacceptable, or None."""
    if type(name) is not str:
        return "name must be a string"
    if not name or len(name) > MAX_NAME:
        return "name empty or too long"
    if invisible(name):
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
    if invisible(uri) or "\\" in uri:
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
