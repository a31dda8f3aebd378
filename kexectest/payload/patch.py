"""Patching a payload's configuration block: the options of `kexectest load`, `lab run` and lab
files become a copy of the ELF with a different `kt_config`.

`patched_config` and `patched_bytes` take either ELF reader's image (payload/image.py on the
host, target/elf.py in the target agent): standard library only and Python 3.6 syntax, since
the agent carries this module; `patch` (a file to a file) is the host's.
"""

from ..errors import Exit, KexectestError
from .config import CONFIG_SIZE, Config
from .options import SWITCH_FLAGS


def _parse_baud(baud: int) -> int:
    if baud <= 0 or 115200 % baud:
        raise KexectestError(f"baud {baud} does not divide 115200 (try 115200, 57600, 38400, "
                             "19200, 9600)", Exit.BAD_INPUT)
    return 115200 // baud


def patched_config(img, *, uart_base=None, baud=None, skip=(), hang_at=None,
                   reset_at=None, max_drives=None, **switches) -> Config:
    """The image's config block with the given changes (None = leave as built).  `switches`:
    the switch options of payload/options.py by name, True/False; `debug_exit` may also be a
    port number, which sets the port and the flag."""
    unknown = sorted(set(switches) - set(SWITCH_FLAGS))
    if unknown:
        raise TypeError(f"patched_config() got unexpected keyword argument(s) {unknown}")
    cfg = img.config
    changes = {}
    if uart_base is not None:
        if not 0 < uart_base <= 0xFFFF:
            raise KexectestError(f"UART base {uart_base:#x} is not an I/O port", Exit.BAD_INPUT)
        changes["uart_base"] = uart_base
    if baud is not None:
        changes["uart_divisor"] = _parse_baud(baud)
    if skip:
        changes["skip"] = cfg.skip | {img.step_index(s) for s in skip}
    if hang_at is not None:
        changes["hang_step"] = img.step_index(hang_at)
    if reset_at is not None:
        changes["reset_step"] = img.step_index(reset_at)
    if max_drives is not None:
        if not 0 <= max_drives <= 0xFFFF:
            raise KexectestError(f"max drives {max_drives} out of range", Exit.BAD_INPUT)
        changes["max_drives"] = max_drives
    flags = cfg.flags
    # debug_exit: True/False switches the flag; an int (not bool) also sets the port.
    debug_exit = switches.get("debug_exit")
    if debug_exit is not None and not isinstance(debug_exit, bool):
        if not 0 < debug_exit <= 0xFFFF:
            raise KexectestError(f"debug-exit port {debug_exit:#x} out of range", Exit.BAD_INPUT)
        changes["debug_exit_port"] = debug_exit
        switches["debug_exit"] = True
    for name, bit in SWITCH_FLAGS.items():
        value = switches.get(name)
        if value is not None:
            flags = flags | bit if value else flags & ~bit
    changes["flags"] = flags
    return cfg.replace(**changes)


def patched_bytes(img, **options) -> bytes:
    """The image's file bytes with its config block changed (options as `patched_config`)."""
    data = bytearray(img.data)
    data[img.config_offset:img.config_offset + CONFIG_SIZE] = patched_config(img, **options).pack()
    return bytes(data)


def patch(src, dst, **options):
    """Write a copy of `src` with its config block changed (options as `patched_config`);
    returns the destination Path."""
    from pathlib import Path

    from ..fsutil import write_atomic  # the host's: atomic, one-line errors
    from .image import PayloadImage  # pyelftools: the host's reader

    dst = Path(dst)
    write_atomic(dst, patched_bytes(PayloadImage.open(src), **options))
    return dst
