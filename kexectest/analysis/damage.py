"""Damaged payload lines: recognised whatever a flipped bit or a lost byte did to them, and read
for the step they name where that is still legible.

The trace marks a line whose checksum fails (`bad_checksum`), but a bit that hits the `KT `
prefix hides the line from it altogether: the rest of the line (record word, fields, the
` ~CCCC` tail) is intact, so it is recognised here instead.  A line with a masked secret
(`scrubbed`) is not the wire's text either.  None of these is evidence about the firmware.
"""

from __future__ import annotations

import re

from ..trace import KINDS, Line

# the console.log timestamp a damaged first line can leave in front of every line
_LOG_TS = re.compile(r"^\+[0-9]{1,12}\.[0-9]{1,9}\t")
_KINDS = "|".join(sorted(KINDS))
# "KT " intact somewhere, then a record word: the tail was hit (or the line was cut)
_HEAD = re.compile(rf"KT ({_KINDS}) ")
# the record word within the first few characters and a checksum tail: the prefix was hit
# (a flipped bit turns the space after "KT" or after the word into one of ' !"$(0`', NUL or a
# byte above 127; a dropped NUL removes it)
_TAILED = re.compile(rf"^.{{1,4}}?({_KINDS})[ !\"$(0`\x00\x80-\uffff]")
_TAIL = re.compile(r"[ \x00-\x7f]~[0-9A-F]{4}$|\s.[0-9A-F]{4}$")
# where only payload lines are expected, field-like text is a payload line that lost both
# anchors: two key=HEX fields, or a run of hex bytes
_FIELDS = re.compile(r"\b[a-z][a-z0-9]{0,5}=[0-9A-F]{2,8}\b")
_HEXRUN = re.compile(r"[0-9A-F]{16}")
_NOISY = re.compile(r"[^\x20-\x7e\t]")
# "begin 041 edd-params": the step a damaged line names, where that part survived
_STEP_REF = re.compile(r"\b(begin|end|data|skip) ([0-9]{3}) ([a-z0-9][a-z0-9-]*)")
QUOTE = 160  # characters of a damaged line quoted in the report


def strip_log_ts(text: str) -> str:
    return _LOG_TS.sub("", text, count=1) if text[:1] == "+" else text


def looks_like_payload(text: str, running: bool = False) -> bool:
    """A line the payload printed that the trace could not parse as one.  `running`: the line
    lies where the payload is running, so only payload lines are expected there (kernel lines
    hold key=value fields too, so the field test applies only there)."""
    t = strip_log_ts(text)
    if t.startswith(("KTSNAP", "KTLOAD")):
        return False
    if ("KT " in t and _HEAD.search(t)) or (_TAILED.match(t) and _TAIL.search(t.rstrip())):
        return True
    return running and (len(_FIELDS.findall(t)) >= 2 or _HEXRUN.search(t) is not None)


def noisy(text: str) -> bool:
    """Bytes the payload never prints: line noise, or a line smeared by a baud mismatch."""
    return "\ufffd" in text or len(_NOISY.findall(text)) * 10 > len(text)


def damaged_kind(ln: Line, running: bool) -> str | None:
    """How a line is damaged payload evidence, or None: "scrubbed" (a secret was masked in it),
    "bad_checksum", "unparsed" (a payload line whose "KT " prefix or tail was hit), "noise"
    (non-printable bytes where the payload is running)."""
    if ln.scrubbed and (ln.record is not None or ln.bad_checksum
                        or looks_like_payload(ln.text, running)):
        return "scrubbed"
    if ln.record is not None:
        return None
    if ln.malformed:  # the trace refused it: checksum right, a field out of the format's widths
        return "malformed"
    if ln.bad_checksum:
        return "bad_checksum"
    if looks_like_payload(ln.text, running):
        return "unparsed"
    if running and ln.text.strip() and noisy(ln.text):
        return "noise"
    return None


def step_ref(text: str) -> tuple[int, str] | None:
    """(index, id) of the step a damaged line still names legibly ("begin 041 edd-params"),
    else None; the caller checks the pair against the step table."""
    m = _STEP_REF.search(text)
    return (int(m.group(2)), m.group(3)) if m else None


def quote(text: str) -> str:
    t = strip_log_ts(text)
    return t if len(t) <= QUOTE else t[:QUOTE - 3] + "..."
