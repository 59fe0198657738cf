"""The instruction-like phrases `hidden.py` looks for, each with its cue class (docs/detection.md).

Matched on text with hidden characters removed, NFKC-folded and lower-cased. Strong classes
(override, conceal, secret, exfil, redirect) name what attacks ask for; weak ones (shadow, coerce,
confirm) are also what honest servers write, so alone they never hold anything."""

from __future__ import annotations

import re

__all__ = ["PHRASES"]

_W = r"[\W_]+"              # between words: spaces, punctuation, markdown emphasis
_ANY = r"(?:\w+" + _W + r"){0,3}?"       # up to three filler words
_NOT = r"(?:do" + _W + r"not|don't|dont|never|must" + _W + r"not|should" + _W + r"not)"
_SECRET_FILES = (r"~/\.ssh\b|\.ssh/|\bid_(?:rsa|dsa|ecdsa|ed25519)\b|\.aws/credentials|(?:^|[\s/'\"`(~])\.env\b"
                 r"(?![.\w])|/etc/(?:passwd|shadow)\b|\bmcp\.json\b|~/\.cursor\b|claude_desktop_config|\.netrc\b"
                 r"|\.git-credentials|\.kube/config|\.npmrc\b|\.pypirc\b|\.docker/config\.json")
PHRASES: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple((cls, label, re.compile(rx)) for cls, label, rx in (
    ("override", "ignore previous instructions",
     r"\b(?:ignore|disregard|forget|override|bypass)" + _W + r"(?:(?:all|any|the|of|everything|your|previous|prior"
     r"|above|earlier|preceding|former|existing|system|safety|other|original)" + _W + r"){1,4}"
     r"(?:instructions?|directions?|prompts?|rules|guidelines|guardrails|polic(?:y|ies)|constraints|context)\b"),
    ("override", "you are now", r"\byou" + _W + r"are" + _W + r"now" + _W + r"(?!able\b|ready\b|connected\b|"
     r"logged\b|signed\b|authenticated\b|in\b|on\b|at\b)\w+|\bfrom" + _W + r"now" + _W + r"on" + _W +
     r"(?:you|ignore|always|never|act|respond|answer|behave|obey)\b"),
    ("override", "new instructions",
     r"\b(?:new|updated|real|actual|hidden|secret|true|revised)" + _W + r"instructions?(?:\s*:|" + _W +
     r"(?:are|follow|for" + _W + r"you|from)\b)"),
    ("override", "reveal the system prompt",
     r"\b(?:reveal|print|output|repeat|disclose|dump|leak|show|share|return|include|send|append|copy)" + _W +
     r"(?:(?:your|the|its|full|entire|complete|whole|original|hidden|model'?s?|assistant'?s?)" + _W + r"){1,3}"
     r"(?:system" + _W + r"(?:prompt|message|instructions?)|initial" + _W + r"instructions)\b"),
    ("conceal", "do not tell the user",
     r"\b" + _NOT + _W + _ANY + r"(?:tell|inform|notify|alert|show|let|warn|remind)" + _W + _ANY + r"users?\b"),
    ("conceal", "do not mention this",
     r"\b" + _NOT + _W + r"(?:mention|reveal|disclose|acknowledge|reference|bring" + _W + r"up)" + _W +
     r"(?:(?:that|this|these|it|any|anything|the" + _W + r"fact|to|the|user|of|about)" + _W + r"?){1,4}"),
    ("conceal", "without telling the user",
     r"\bwithout" + _W + _ANY + r"(?:telling|informing|notifying|alerting|showing|asking)" + _W + _ANY + r"users?\b"
     r"(?!" + _W + r"(?:for" + _W + r")?(?:confirmation|permission|approval|consent))"),
    ("conceal", "hide this from the user",
     r"\b(?:hide|conceal|keep)" + _W + _ANY + r"(?:secret" + _W + r"|hidden" + _W + r")?from" + _W +
     r"(?:the" + _W + r")?users?\b|\busers?" + _W + r"(?:must|should)" + _W + r"(?:not|never)" + _W +
     r"(?:know|see|find" + _W + r"out|be" + _W + r"(?:told|informed|aware))\b|\busers?" + _W + r"(?:does" + _W +
     r"not|doesn't|do" + _W + r"not|don't|need" + _W + r"not)" + _W + r"(?:need" + _W + r"to" + _W + r")?"
     r"(?:know|be" + _W + r"told|see" + _W + r"this)\b|\b(?:secretly|covertly|silently"
     r"|quietly)" + _W + r"(?:send|forward|copy|add|include|read|upload|call|pass|append|bcc|cc)\b"),
    ("secret", "sensitive file reference", _SECRET_FILES),
    ("secret", "private key requested",
     r"\b(?:send|pass|include|read|cat|leak|share|upload|copy|print|output|attach)" + _W + r"(?:(?:the|your|their|"
     r"user'?s?|my|its)" + _W + r"){0,2}(?:ssh|private|secret|gpg|pgp)" + _W + r"keys?\b"),
    ("exfil", "exfiltrate", r"\bexfiltrat\w*"),
    ("exfil", "content passed through a parameter",
     r"\b(?:pass|put|include|add|send|provide|embed|append|insert|place)" + _W + r"(?:(?:its|their|the|that|this|"
     r"file'?s?|full|entire|whole|complete|all)" + _W + r"){0,3}(?:contents?|text|data|values?|keys?|output)" + _W +
     r"(?:\w+" + _W + r"){0,12}?(?:as|in|into|inside|via|through)" + _W + r"(?:the" + _W + r")?['\"`]?(?:sidenote|"
     r"side_note|note|notes|context|metadata|extra|comment|feedback|remark|debug|trace)['\"`]?\b"),
    ("exfil", "conversation sent along",
     r"\b(?:include|pass|send|append|attach|add|forward|upload|copy|summari[sz]e)" + _W + _ANY +
     r"(?:(?:entire|full|whole|complete|previous|prior|recent)" + _W + r")+(?:conversation|chat|message)s?"
     r"(?:" + _W + r"(?:history|log|so" + _W + r"far))?\b"),
    ("redirect", "redirect messages",
     r"\b(?:all|every|any)" + _W + r"(?:\w+" + _W + r"){0,2}?(?:emails?|messages?|requests?|payments?|transfers?"
     r"|invoices?)" + _W + r"(?:\w+" + _W + r"){0,5}?(?:must|should|shall|will|are" + _W + r"to)" + _W + r"(?:\w+" +
     _W + r"){0,2}?"
     r"(?:sent|redirected|forwarded|routed|copied|cc'?d|bcc'?d|paid|transferred)\b"
     r"|\b(?:bcc|cc|forward|redirect|reroute|send" + _W + r"a" + _W + r"copy)" + _W + r"(?:\w+" + _W + r"){0,6}?"
     r"(?:to" + _W + r")?(?:[\w.+-]+@[\w-]+\.[\w.-]+|\+\d[\d ().-]{6,}\d)"
     r"|\b(?:change|replace|set|switch|update)" + _W + r"(?:the" + _W + r")?(?:recipient|destination|payee|iban"
     r"|account" + _W + r"number|phone" + _W + r"number|receiver)" + _W + r"(?:\w+" + _W + r"){0,3}?to\b"),
    ("shadow", "instruction about other tools",
     r"\b(?:when|whenever|if|before|after)" + _W + r"(?:\w+" + _W + r"){0,4}?tools?" + _W + r"(?:is|are)" + _W +
     r"(?:available|present|called|used|invoked|run)\b|\bside" + _W + r"effects?" + _W + r"on" + _W +
     r"(?:\w+" + _W + r"){0,4}?tools?\b"),
    ("shadow", "before using this tool, read/send ...",
     r"\bbefore" + _W + r"(?:using|calling|invoking|running|executing|you" + _W + r"(?:use|call|invoke))" + _W +
     r"(?:this|the|any|other)" + _W + r"(?:\w+" + _W + r")?tools?\b.{0,120}?\b(?:read|send|cat|open|include|pass"
     r"|upload|fetch|access|provide|attach|copy)\b"),
    ("coerce", "otherwise it will not work",
     r"\botherwise" + _W + r"(?:\w+" + _W + r"){0,5}?(?:will" + _W + r"not|won't|cannot|can't|will" + _W +
     r"(?:fail|crash|break))" + _W + r"(?:work|function|succeed)?|\b(?:application|system|tool)" + _W +
     r"will" + _W + r"crash\b|\bdata" + _W + r"will" + _W + r"be" + _W + r"lost\b"),
    ("confirm", "skip user confirmation",
     r"\b(?:without|do" + _W + r"not|don't|dont|never)" + _W + _ANY + r"(?:ask(?:ing)?|wait(?:ing)?|request(?:ing)?"
     r"|seek(?:ing)?|get(?:ting)?)" + _W + _ANY + r"(?:confirmation|permission|approval|consent)\b"),
))
