"""The shell agent: `kexectest-agent.sh`, for a machine under test with a POSIX shell,
coreutils or busybox and kexec-tools, and no Python.

target/shell_agent.sh is the script; its @NAME@ marks are filled in here from the tables the
Python agent runs on (the snapshot's kinds and keys, preflight's wording, the exit codes), so
the two agents cannot disagree about a key or a message.  What the shell does with them (the
format, the checksum) is held to the Python agent's output by tests/test_shell_agent.py, line
for line on the same machine.
"""

import re
from pathlib import Path

from .. import __version__
from ..errors import Exit
from . import loader, snapshot

TEMPLATE = Path(__file__).with_name("shell_agent.sh")
AGENT_NAME = "kexectest-agent.sh"
_MARK = re.compile(r"@([A-Za-z_]+)@")


def _double_quoted(message: str) -> str:
    """A preflight message for a "double-quoted" shell string, its {fields} as shell variables."""
    text = re.sub(r'(["\\`$])', r"\\\1", message)
    return re.sub(r"\{(\w+)\}", r"${\1}", text)


def values() -> dict:
    out = {
        "VERSION": __version__,
        "PREFIX": snapshot.PREFIX,
        "SNAP_VERSION": str(snapshot.VERSION),
        "EDD_KEYS": " ".join(snapshot.EDD_KEYS),
        "DMI_KEYS": " ".join(snapshot.DMI_KEYS),
        "MODULES_PER_LINE": str(snapshot.MODULES_PER_LINE),
        "SCSI_TYPE_ROM": snapshot.SCSI_TYPE_ROM,
        "CAP_SYS_BOOT": str(loader.CAP_SYS_BOOT),
    }
    out.update({f"EXIT_{code.name}": str(int(code)) for code in Exit})
    out.update({f"MSG_{key}": _double_quoted(text) for key, text in loader.MESSAGES.items()})
    return out


def shell_agent_source() -> str:
    """The text of kexectest-agent.sh."""
    table = values()
    text = TEMPLATE.read_text(encoding="utf-8")
    missing = sorted({m for m in _MARK.findall(text) if m not in table})
    if missing:
        raise LookupError(f"{TEMPLATE.name}: no value for {', '.join(missing)}")
    return _MARK.sub(lambda m: table[m.group(1)], text)
