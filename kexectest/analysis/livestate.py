"""The capture loop's view of a run while it happens: the current step, steps done, whether the
payload finished or the machine reset; it decides when a capture may stop."""

from __future__ import annotations

from ..trace import Line
from .kernel import RESET_BANNERS, is_handoff


class LiveState:
    """Fed every Line as it arrives; knows the current step, steps done, whether the payload
    finished, and whether a reset was seen.  Used by the capture loop to decide when to stop.

    A payload line repeated on the wire (the same text twice in a row) is read once: a
    duplicated banner is not the payload starting again."""

    def __init__(self) -> None:
        self.current: tuple[int, str] | None = None
        self.steps_done = 0
        self.payload_started = False
        self.done = False
        self.handoff_seen = False
        self.reset_line: str | None = None
        # after "done ... next=int19": what shows the firmware booted again (or None yet)
        self.awaiting_chain = False
        self.chain_line: str | None = None
        self._ended: set[int] = set()
        self._last_record_text: str | None = None

    def feed(self, line: Line) -> str | None:
        rec = line.record
        if rec is None:
            text = line.text
            if not self.payload_started:
                if not self.handoff_seen and is_handoff(text):
                    self.handoff_seen = True
                elif self.handoff_seen and any(b in text for b in RESET_BANNERS):
                    self.reset_line = text
                    return "reset"
            elif not self.done and any(b in text for b in RESET_BANNERS):
                self.reset_line = text
                return "reset"
            elif self.awaiting_chain and any(b in text for b in RESET_BANNERS):
                return self._chained(text)  # int 19h booted the firmware's next device
            return None
        if line.text == self._last_record_text:
            return None  # the same line twice: the wire repeated it
        self._last_record_text = line.text
        kind = rec.kind
        if kind == "boot" or (kind == "banner" and self.awaiting_chain):
            return self._chained(line.text)
        if kind == "banner" and self.payload_started and not self.done:
            self.reset_line = line.text
            return "reset"
        self.payload_started = True
        if kind == "begin":
            self.current = (rec.step, rec.name)
        elif kind in ("end", "skip"):
            self.current = None
            if rec.step not in self._ended:
                self._ended.add(rec.step)
                self.steps_done += 1
        elif kind == "done":
            self.current = None
            self.done = True
            if rec.fields.get("next") == "int19":
                self.awaiting_chain = True  # the int19-boot step is the last word
                return None
            return "final"
        return None

    def _chained(self, text: str) -> str:
        self.awaiting_chain = False
        self.chain_line = text
        return "final"
