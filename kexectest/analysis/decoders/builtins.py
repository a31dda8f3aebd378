"""The payload's own routines (no BIOS call): the local APIC and 8259 repairs after the previous
kernel, the real-mode IDT and stack it set up."""

from __future__ import annotations

from .base import Decoded, decoder


@decoder("apic-fix")
def _apic_fix(r, d):
    res = {"svr_before": r.eax, "svr_after": r.ebx, "lvt0_after": r.ecx,
           "was_software_disabled": not (r.eax & 0x100), "reprogrammed_virtual_wire": r.edx == 1}
    return Decoded("error" if r.cf else "ok", res)


@decoder("pic-init")
def _pic_init(r, d):
    return Decoded("error" if r.cf else "ok", {"old_master_mask": r.eax & 0xFF, "old_slave_mask": (r.eax >> 8) & 0xFF,
                                               "new_master_mask": r.ebx & 0xFF, "new_slave_mask": (r.ebx >> 8) & 0xFF})


@decoder("idt-real")
def _idt(r, d):
    return Decoded("error" if r.cf else "ok", {"idt_base_at_entry": r.eax, "idt_limit_at_entry": r.ebx})


@decoder("stack")
def _stack(r, d):
    return Decoded("error" if r.cf else "ok", {"ss": r.eax & 0xFFFF, "sp": r.ebx & 0xFFFF})
