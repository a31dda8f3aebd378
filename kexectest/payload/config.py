"""The payload's 64-byte configuration block `kt_config` (docs/payload.md): its layout and flags.

The host patches it before a load (payload/patch.py); the payload reads it at entry.
Standard library only and Python 3.6 syntax: the target agent carries this module
(target/pack.py, docs/target-agent.md).
"""

import struct
from collections import namedtuple

CONFIG_MAGIC = b"KTCF"
CONFIG_SIZE = 64
NO_STEP = 0xFFFF
MAX_SKIP_STEPS = 256

FLAG_VGA = 0x01
FLAG_E9 = 0x02
FLAG_INT19 = 0x04
FLAG_DEBUG_EXIT = 0x08
FLAG_MASK_NMI = 0x10
FLAG_KEEP_UART = 0x20

_CONFIG_FMT = struct.Struct("<4sHHHHIHHHBB32sH6s")
assert _CONFIG_FMT.size == CONFIG_SIZE


_FIELDS = ("magic layout_version block_size uart_base uart_divisor flags hang_step reset_step "
           "debug_exit_port pic_mask_master pic_mask_slave skip max_drives reserved")


class Config(namedtuple("Config", _FIELDS)):
    """The 64-byte `kt_config` block, field for field (docs/payload.md); `skip` is the frozenset
    of skipped step indices.  Immutable: `replace(**changes)` gives a changed copy."""

    __slots__ = ()

    def replace(self, **changes) -> "Config":
        return self._replace(**changes)

    @classmethod
    def unpack(cls, raw: bytes) -> "Config":
        (magic, ver, size, uart, div, flags, hang, reset, dbg, m1, m2, skip, drives,
         reserved) = _CONFIG_FMT.unpack(raw)
        bits = int.from_bytes(skip, "little")
        return cls(magic, ver, size, uart, div, flags, hang, reset, dbg, m1, m2,
                   frozenset(i for i in range(MAX_SKIP_STEPS) if bits >> i & 1), drives, reserved)

    def pack(self) -> bytes:
        bits = sum(1 << i for i in self.skip)
        return _CONFIG_FMT.pack(
            self.magic, self.layout_version, self.block_size, self.uart_base, self.uart_divisor,
            self.flags, self.hang_step, self.reset_step, self.debug_exit_port,
            self.pic_mask_master, self.pic_mask_slave, bits.to_bytes(32, "little"),
            self.max_drives, self.reserved)

    @property
    def baud(self):
        """The baud rate the divisor gives (None when the divisor is 0)."""
        return 115200 // self.uart_divisor if self.uart_divisor else None

    def flag(self, bit: int) -> bool:
        return bool(self.flags & bit)

    def to_dict(self) -> dict:
        return {
            "magic": self.magic.decode("latin-1"),
            "layout_version": self.layout_version,
            "block_size": self.block_size,
            "uart_base": self.uart_base,
            "uart_divisor": self.uart_divisor,
            "baud": self.baud,
            "flags": self.flags,
            "vga_mirror": self.flag(FLAG_VGA),
            "e9_mirror": self.flag(FLAG_E9),
            "int19": self.flag(FLAG_INT19),
            "debug_exit": self.flag(FLAG_DEBUG_EXIT),
            "mask_nmi": self.flag(FLAG_MASK_NMI),
            "keep_uart": self.flag(FLAG_KEEP_UART),
            "hang_step": None if self.hang_step == NO_STEP else self.hang_step,
            "reset_step": None if self.reset_step == NO_STEP else self.reset_step,
            "debug_exit_port": self.debug_exit_port,
            "pic_mask_master": self.pic_mask_master,
            "pic_mask_slave": self.pic_mask_slave,
            "skip": sorted(self.skip),
            "max_drives": self.max_drives,
        }
