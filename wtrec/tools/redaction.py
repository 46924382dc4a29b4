"""What looks secret in a payload, and how to blank it out before sharing.

Each built-in pattern marks the secret part of its match as the group
named `secret` (the value of an Authorization header, not the word
"Authorization"), so redaction keeps the structure a reader needs and
removes only the value. Redacted values ("[REDACTED]" or a run of "*")
are not findings, so `scan` of a redacted file is clean for the patterns
that were applied. A secret split across two writes is not seen.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass

from wtrec.errors import UsageError

MARKER = b"[REDACTED]"
MASK = b"*"

_HEADER_VALUE = rb"[ \t]*(?P<secret>[^\r\n]+)"
BUILTIN: dict[str, bytes] = {
    "authorization": rb"(?im)^(?:proxy-)?authorization:" + _HEADER_VALUE,
    "cookie": rb"(?im)^cookie:" + _HEADER_VALUE,
    "set-cookie": rb"(?im)^set-cookie:" + _HEADER_VALUE,
    "bearer-token": rb"(?i)\bbearer[ \t]+(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)",
    "password": (rb"(?i)\b(?:password|passwd|pwd|passphrase|secret|api[_-]?key|access[_-]?token)"
                 rb"[\"']?\s*[=:]\s*[\"']?(?P<secret>[^\s&\"',;]+)"),
    "private-key": (rb"(?P<secret>-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?"
                    rb"(?:-----END [A-Z ]*PRIVATE KEY-----|$))"),
    "aws-access-key": rb"\b(?P<secret>(?:AKIA|ASIA)[0-9A-Z]{16})\b",
    "gcp-api-key": rb"\b(?P<secret>AIza[0-9A-Za-z\-_]{35})",
    "github-token": rb"\b(?P<secret>gh[pousr]_[A-Za-z0-9]{36,})",
    "card-number": rb"(?<![0-9])(?P<secret>[0-9](?:[ -]?[0-9]){12,18})(?![0-9])",
}


@dataclass(frozen=True)
class Rule:
    name: str
    regex: re.Pattern

    def spans(self, data: bytes) -> Iterator[tuple[int, int]]:
        """(start, end) of each secret part, redacted ones and non-Luhn card numbers excepted."""
        for m in self.regex.finditer(data):
            if "secret" in self.regex.groupindex:
                start, end = m.span("secret")
            elif self.regex.groups:
                start, end = m.span(1)
            else:
                start, end = m.span()
            if start < 0 or end <= start:
                continue
            value = data[start:end]
            if _is_redacted(value):
                continue
            if self.name == "card-number" and not _luhn(value):
                continue
            yield start, end


def _is_redacted(value: bytes) -> bool:
    stripped = value.strip()
    return (not stripped.replace(MASK, b"") or not stripped.replace(MARKER, b"")
            or stripped.startswith(MARKER))


def _luhn(value: bytes) -> bool:
    digits = [int(c) for c in value.decode("ascii", "ignore") if c.isdigit()]
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return len(digits) >= 13 and total % 10 == 0


def rules(names: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> list[Rule]:
    """The built-in rules (all, or those named) plus the user's regexes."""
    unknown = [n for n in names if n not in BUILTIN]
    if unknown:
        raise UsageError(f"unknown pattern {', '.join(unknown)}; built in: {', '.join(BUILTIN)}")
    chosen = [Rule(n, re.compile(BUILTIN[n])) for n in (names or tuple(BUILTIN))]
    for number, text in enumerate(extra, 1):
        try:
            chosen.append(Rule(f"pattern-{number}", re.compile(text.encode("utf-8",
                                                                           "surrogateescape"))))
        except re.error as exc:
            raise UsageError(f"bad --pattern {text!r}: {exc}") from None
    return chosen


@dataclass(frozen=True)
class Finding:
    rule: str
    start: int
    end: int


def find(data: bytes, chosen: list[Rule]) -> list[Finding]:
    """Every secret part in `data`, in order of position."""
    found = [Finding(rule.name, s, e) for rule in chosen for s, e in rule.spans(data)]
    return sorted(found, key=lambda f: (f.start, f.end))


def redact(data: bytes, findings: list[Finding], keep_length: bool) -> bytes:
    """`data` with each finding replaced; overlapping findings are merged first."""
    spans: list[list[int]] = []
    for f in findings:
        if spans and f.start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], f.end)
        else:
            spans.append([f.start, f.end])
    out, position = [], 0
    for start, end in spans:
        out.append(data[position:start])
        out.append(MASK * (end - start) if keep_length else MARKER)
        position = end
    out.append(data[position:])
    return b"".join(out)


def preview(data: bytes, finding: Finding) -> bytes:
    """Enough of a secret to recognise it, not to use it: its first 4 bytes."""
    value = data[finding.start:finding.end]
    return value[:4] + b"..." if len(value) > 4 else b"..."
