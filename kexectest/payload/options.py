"""The payload options: one table, `OPTIONS`, from which everything that names them is made --
the command-line options of `kexectest load` and `lab run` (commands/payload.py), the keyword
arguments of `payload.patch` (`config_kwargs`), the argv of `kexectest load` on a target
(`config_argv`), the keys of a lab file's `load` table (fleet/labfile.py, docs/lab-files.md)
and the keys the virtual lab accepts (lab/runner.py).

Adding a payload option is one row.  A row's kind says how its value is parsed, written as
argv words and typed in a lab file; a switch's `flag` is the kt_config bit patch.py sets or
clears, so a new switch needs nothing else on the host.  A new kt_config field (a number, a
step) also needs its line in patch.py, which says what it does to the block.

Standard library only and Python 3.6 syntax: the target agent carries this module and builds
its command line from `OPTIONS` (target/agent.py).
"""

from collections import namedtuple

from ..errors import Exit, KexectestError
from .config import FLAG_DEBUG_EXIT, FLAG_E9, FLAG_INT19, FLAG_KEEP_UART, FLAG_MASK_NMI, FLAG_VGA

# kind -> the TOML types a lab file may give it, and the words of its type in docs/lab-files.md
KINDS = {
    "int": ((int,), "integer"),
    "port": ((str, int), 'I/O port: integer or string ("0x3f8")'),
    "step": ((str, int), "step id or number"),
    "steps": ((list,), "array of step ids or numbers"),
    "switch": ((bool,), "boolean"),
}


class Option(namedtuple("Option", "name kind default help flag implies")):
    """One payload option.  name: the patch keyword and lab-file key (--name-with-dashes on the
    command line); kind: a key of KINDS; default: what the built payload does without it (tests
    compare it with the ELF); flag: a switch's kt_config flag bit; implies: a value given is
    also that switch's value (unless it is off)."""

    __slots__ = ()

    def __new__(cls, name, kind, default, help, flag=0, implies=None):
        return super().__new__(cls, name, kind, default, help, flag, implies)

    @property
    def cli(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        if self.kind == "switch":
            return "on" if self.default else "off"
        if self.default in (None, ()):
            return "none"
        return f"{self.default:#x}" if self.kind == "port" else str(self.default)

    @property
    def help_line(self) -> str:
        """The option's help as every command line shows it."""
        implies = f"; implies {BY_NAME[self.implies].cli}" if self.implies else ""
        return f"{self.help}{implies}. Payload default: {self.default_text}."

    def argv(self, value) -> list:
        """The words that give `kexectest load` this value."""
        if self.kind == "switch":
            return [self.cli if value else "--no-" + self.cli[2:]]
        if self.kind == "steps":
            return [w for step in value for w in (self.cli, str(step))]
        return [self.cli, hex(value) if self.kind == "port" else str(value)]


OPTIONS = (
    Option("uart_base", "port", 0x3F8,
           "UART I/O base the payload writes to (COM1 0x3f8, COM2 0x2f8)"),
    Option("baud", "int", 115200, "Payload baud rate (divides 115200)"),
    Option("skip", "steps", (), "Skip a step (id or number); repeatable"),
    Option("hang_at", "step", None, "Hang on purpose at this step (tests the collector)"),
    Option("reset_at", "step", None, "Triple-fault on purpose at this step (tests the collector)"),
    Option("int19", "switch", False, "Chain to the BIOS bootstrap (int 19h) when done",
           flag=FLAG_INT19),
    Option("vga_mirror", "switch", False, "Mirror the trace to VGA text memory", flag=FLAG_VGA),
    Option("e9_mirror", "switch", False, "Mirror the trace to port 0xE9", flag=FLAG_E9),
    Option("debug_exit", "switch", False,
           "Write the debug-exit port when done (QEMU isa-debug-exit)", flag=FLAG_DEBUG_EXIT),
    Option("debug_exit_port", "port", 0xF4, "The debug-exit I/O port", implies="debug_exit"),
    Option("mask_nmi", "switch", False, "Mask NMIs (CMOS port 0x70)", flag=FLAG_MASK_NMI),
    Option("keep_uart", "switch", False, "Leave the UART as the firmware set it up",
           flag=FLAG_KEEP_UART),
    Option("max_drives", "int", 4, "Most BIOS hard disks to probe"),
)

BY_NAME = {o.name: o for o in OPTIONS}
CONFIG_OPTION_NAMES = tuple(BY_NAME)
SWITCH_FLAGS = {o.name: o.flag for o in OPTIONS if o.kind == "switch"}  # for patch.py
LAB_KEYS = {o.name: KINDS[o.kind][0] for o in OPTIONS}  # a lab file's load keys -> TOML types


def parse_number(text) -> int:
    """A number as people write ports: decimal, 0x-prefixed, or hex ending in 'h' (ValueError)."""
    if isinstance(text, int):
        return text
    t = str(text).strip().lower()
    return int(t[:-1], 16) if t.endswith("h") else int(t, 0)


def lab_values(load: dict) -> dict:
    """A lab file's (or any caller's) option values as the command line would give them:
    ports written as strings become numbers, step lists tuples."""
    out = dict(load)
    for name, value in load.items():
        o = BY_NAME.get(name)
        if o is None or value is None:
            continue
        if o.kind == "port" and isinstance(value, str):
            try:
                out[name] = parse_number(value)
            except ValueError:
                raise KexectestError(f"load.{name}: {value!r} is not a number (e.g. \"0x3f8\")",
                                     Exit.CONFIG) from None
        elif o.kind == "steps":
            out[name] = tuple(value)
    return out


def config_kwargs(options: dict) -> dict:
    """The keyword arguments for `payload.patch` from parsed option values
    (pass a command's **kwargs; unrelated keys are ignored)."""
    kw = {o.name: options.get(o.name) for o in OPTIONS}
    for o in OPTIONS:
        if o.kind == "steps":
            kw[o.name] = tuple(kw[o.name] or ())
        if o.implies:
            value = kw.pop(o.name)
            if value is not None and kw[o.implies] is not False:
                kw[o.implies] = value  # patch takes a number there: it sets the flag and the value
    return kw


def config_argv(kwargs: dict) -> list:
    """The inverse of `config_kwargs`: command-line words for `kexectest load` on a target."""
    argv = []
    for o in OPTIONS:
        value = kwargs.get(o.name)
        if value is None:
            continue
        if o.kind == "switch" and not isinstance(value, bool):  # a number folded in by `implies`
            o = next(src for src in OPTIONS if src.implies == o.name)
        argv += o.argv(value)
    return argv


def markdown() -> str:
    """The table of lab-file `load` keys docs/lab-files.md shows (a test keeps it current)."""
    rows = ["| key | type | payload default | meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        also = f"; implies `{o.implies}`" if o.implies else ""
        rows.append(f"| `{o.name}` | {KINDS[o.kind][1]} | {o.default_text} | {o.help}{also} |")
    return "\n".join(rows) + "\n"
