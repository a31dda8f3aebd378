"""Exit codes, verdicts, and the one exception type the CLI turns into a one-line error.

Verdict codes (0-9) say what the machine under test did; tool codes (10+) say why kexectest
itself could not finish.  Both are documented in the README and in `kexectest --help`; other
tools depend on them, so never renumber.  `Verdict` is the one list of verdict names: every
other list (report schema, sweep colours, README) is made from it or checked against it.
Standard library only and Python 3.6 syntax: the target agent carries this module.
"""

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
    DIED_IN_HANDOFF = 9  # the old kernel crashed after its hand-off line, before the payload
    # tool failures
    BAD_INPUT = 10  # unreadable / corrupt / empty input file
    MISSING_TOOL = 11  # assembler, qemu, kexec-tools, ...
    PAYLOAD_LIMITS = 12  # payload too big / overlaps reserved memory
    UNKNOWN_STEP = 13
    SERIAL = 14  # cannot open / lost the serial line
    KEXEC_REFUSED = 15  # preflight or kexec_load failed
    LAB_STAGE = 16  # a virtual-lab or target stage failed (boot, login, power)
    LAB_BUILD = 17  # building the guest image failed
    NO_SPACE = 18
    CONFIG = 19  # lab / sweep file invalid
    TARGET_COMMAND = 20  # the command run on the target failed
    NOT_REPRODUCED = 21  # bisect: the step does not fail with the full set of drivers
    INTERNAL = 70  # a bug in kexectest itself (EX_SOFTWARE): please report it


class Verdict(str, enum.Enum):
    """What a run proved, with the exit status `kexectest run`/`report` ends with."""

    COMPLETED = "completed"
    FAILED_STEPS = "failed-steps"
    HUNG = "hung"
    RESET = "reset"
    NO_OUTPUT = "no-output"
    GARBLED = "garbled"
    DIED_BEFORE_HANDOFF = "died-before-handoff"
    DIED_IN_HANDOFF = "died-in-handoff"
    INTERRUPTED = "interrupted"
    # the run never became a test: no login, a failing trigger or power command (LAVA's
    # infrastructure failure); the exit status is that stage's (16, 20, ...)
    INFRASTRUCTURE_ERROR = "infrastructure-error"

    @property
    def exit(self) -> Exit:
        return _VERDICT_CODES[self]

    def __str__(self) -> str:
        return self.value


_VERDICT_CODES = {
    Verdict.COMPLETED: Exit.COMPLETED,
    Verdict.FAILED_STEPS: Exit.FAILED_STEPS,
    Verdict.HUNG: Exit.HUNG,
    Verdict.RESET: Exit.RESET,
    Verdict.NO_OUTPUT: Exit.NO_OUTPUT,
    Verdict.GARBLED: Exit.GARBLED,
    Verdict.DIED_BEFORE_HANDOFF: Exit.DIED_BEFORE_HANDOFF,
    Verdict.DIED_IN_HANDOFF: Exit.DIED_IN_HANDOFF,
    Verdict.INTERRUPTED: Exit.INTERRUPTED,
    Verdict.INFRASTRUCTURE_ERROR: Exit.LAB_STAGE,  # the default; the stage's own code wins
}

# verdict name -> exit code, for callers that hold the name as a string
VERDICT_EXIT = {v.value: v.exit for v in Verdict}


class KexectestError(Exception):
    """An expected failure: printed as one line, exits with `code`."""

    def __init__(self, message: str, code: Exit = Exit.BAD_INPUT):
        super().__init__(message)
        self.code = code
