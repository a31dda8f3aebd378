"""Exit codes and the one exception type the CLI turns into a one-line error.

Verdict codes (0-9) say what the machine under test did; tool codes (10+) say
why kexectest itself could not finish.  Both are documented in the README and
in `kexectest --help`; other tools depend on them, so never renumber.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    # verdicts
    COMPLETED = 0
    FAILED_STEPS = 1
    USAGE = 2  # click's own code for bad options
    HUNG = 3
    RESET = 4
    NO_OUTPUT = 5
    GARBLED = 6
    DIED_BEFORE_HANDOFF = 7
    INTERRUPTED = 8
    # tool failures
    BAD_INPUT = 10  # unreadable / corrupt / empty input file
    MISSING_TOOL = 11  # assembler, qemu, kexec-tools, ...
    PAYLOAD_LIMITS = 12  # payload too big / overlaps reserved memory
    UNKNOWN_STEP = 13
    SERIAL = 14  # cannot open / lost the serial line
    KEXEC_REFUSED = 15  # preflight or kexec_load failed
    LAB_STAGE = 16  # a virtual-lab stage failed (boot, login, command)
    LAB_BUILD = 17  # building the guest image failed
    NO_SPACE = 18
    CONFIG = 19  # lab / sweep file invalid
    TARGET_COMMAND = 20  # the command run on the target failed


VERDICT_EXIT = {
    "completed": Exit.COMPLETED,
    "failed-steps": Exit.FAILED_STEPS,
    "hung": Exit.HUNG,
    "reset": Exit.RESET,
    "no-output": Exit.NO_OUTPUT,
    "garbled": Exit.GARBLED,
    "died-before-handoff": Exit.DIED_BEFORE_HANDOFF,
    "interrupted": Exit.INTERRUPTED,
}


class KexectestError(Exception):
    """An expected failure: printed as one line, exits with `code`."""

    def __init__(self, message: str, code: Exit = Exit.BAD_INPUT):
        super().__init__(message)
        self.code = code
