"""The step catalogue: each step's id, interrupt, canonical function and title, and which
services a healthy BIOS may simply lack.  Decoders, the analysis and the reports name steps
from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepInfo:
    index: int
    id: str
    int_no: int  # 0 = built-in routine
    function: str  # canonical: "AX=E820h", "AH=88h", "" for built-ins / int 11h-style calls
    title: str


_TABLE = """\
state|00||machine state at entry
apic-fix|00||local APIC repair (virtual wire)
pic-init|00||8259 PIC re-initialisation
pit-init|00||PIT channel 0 to 18.2 Hz
nmi-mask|00||mask NMI
idt-real|00||real-mode IDT 0:3FF
stack|00||real-mode stack
sti|00||enable interrupts
base-mem|12||base memory size
e820|15|AX=E820h|E820 memory map
e801|15|AX=E801h|E801 memory size
mem88|15|AH=88h|extended memory size (88h)
cpu-mode-hint|15|AX=EC00h|CPU long-mode hint
a20-test|00||A20 wrap-around test
a20-query|15|AX=2402h|A20 gate status
a20-support|15|AX=2403h|A20 gate support
a20-bios-disable|15|AX=2400h|A20 disable (BIOS)
a20-test-off|00||A20 test after BIOS disable
a20-bios-enable|15|AX=2401h|A20 enable (BIOS)
a20-test-on|00||A20 test after BIOS enable
a20-kbc|00||A20 enable via keyboard controller
a20-fast|00||A20 enable via port 92h
a20-final|00||A20 final state
kbd-shift|16|AH=02h|keyboard shift flags
kbd-rate|16|AX=0305h|keyboard repeat rate
kbd-pending|16|AH=01h|keyboard key pending
kbd-read|16|AH=00h|keyboard read key
kbd-ext-shift|16|AH=12h|extended shift flags
sysconf|15|AH=C0h|system configuration table
equipment|11||equipment list
ist|15|AX=E980h|Intel SpeedStep (IST) info
apm-check|15|AX=5300h|APM installation check
apm-disconnect|15|AX=5304h|APM disconnect
apm-connect-rm|15|AX=5301h|APM connect real mode
apm-version|15|AX=530Eh|APM driver version
apm-enable|15|AX=5308h|APM enable power management
apm-disconnect2|15|AX=5304h|APM disconnect
apm-connect-32|15|AX=5303h|APM connect 32-bit protected mode
apm-disconnect3|15|AX=5304h|APM disconnect
disk-reset|13|AH=00h|disk reset
edd-check|13|AH=41h|EDD installation check
edd-params|13|AH=48h|EDD drive parameters
disk-geometry|13|AH=08h|disk geometry (CHS)
dasd-type|13|AX=1500h|DASD type
read-chs|13|AX=0201h|read sector by CHS
read-lba|13|AH=42h|read sector by LBA
fdpt-hd0|00||fixed disk parameter table hd0 (int 41h)
fdpt-hd1|00||fixed disk parameter table hd1 (int 46h)
video-cursor|10|AH=03h|cursor position
video-mode|10|AH=0Fh|current video mode
video-ega|10|AH=12h BL=10h|EGA information
video-dcc|10|AX=1A00h|display combination code
video-setmode|10|AX=0003h|set video mode 3
video-font-8x14|10|AX=1111h|load ROM font 8x14
video-font-8x8|10|AX=1112h|load ROM font 8x8
video-font-8x16|10|AX=1114h|load ROM font 8x16
vbe-info|10|AX=4F00h|VESA controller information
vbe-mode-info|10|AX=4F01h|VESA mode information
vbe-set-mode|10|AX=4F02h|VESA set mode
ddc-caps|10|AX=4F15h BL=00h|DDC capabilities
edid|10|AX=4F15h BL=01h|read EDID
video-teletype|10|AH=0Eh|teletype output
ticks|1A|AH=00h|tick count
rtc-time|1A|AH=02h|RTC time
rtc-date|1A|AH=04h|RTC date
pci-bios|1A|AX=B101h|PCI BIOS present
pci-find-vga|1A|AX=B103h|PCI find VGA class
tick-advance|00||timer tick advancing
wait|15|AH=86h|wait 100 ms
ticks-after|1A|AH=00h|tick count after wait
int19-boot|19||bootstrap loader (int 19h)"""


STEPS: dict[str, StepInfo] = {}
for _i, _row in enumerate(_TABLE.splitlines()):
    _id, _int, _fn, _title = _row.split("|")
    STEPS[_id] = StepInfo(_i, _id, int(_int, 16), _fn, _title)


STEP_IDS = list(STEPS)


def step_info(name: str, index: int | None = None, int_no: int | None = None,
              ax: int | None = None) -> StepInfo:
    """The step's info; for a step the table does not know, one made from its begin line."""
    info = STEPS.get(name)
    if info is not None:
        return info
    fn = f"AX={ax:04X}h" if ax is not None and int_no else ""
    return StepInfo(index if index is not None else -1, name, int_no or 0, fn, name)


def int_label(int_no: int) -> str:
    return "builtin" if int_no == 0 else f"int {int_no:02X}h"


# Services a healthy BIOS may simply not have (Intel-only IST, the long-mode hint, APM on modern
# firmware, VESA/DDC, PCI BIOS, EDD): their "not supported" answer describes the firmware, it is
# not a failure after kexec, so it must not turn a clean run into failed-steps.
OPTIONAL_SERVICES = frozenset({
    "cpu-mode-hint", "ist", "kbd-ext-shift", "sysconf", "a20-query", "a20-support",
    "a20-bios-disable", "a20-bios-enable", "apm-check", "apm-disconnect", "apm-connect-rm",
    "apm-version", "apm-enable", "apm-disconnect2", "apm-connect-32", "apm-disconnect3",
    "edd-check", "edd-params", "dasd-type", "video-ega", "video-dcc", "vbe-info",
    "vbe-mode-info", "vbe-set-mode", "ddc-caps", "edid", "pci-bios", "pci-find-vga",
})
