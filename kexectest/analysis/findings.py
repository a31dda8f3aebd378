"""What the machine looked like when the payload was entered (IVT, APIC, PICs, paging), as
findings a human should read."""

from __future__ import annotations

_CODE_VECTORS = ("v08", "v10", "v13", "v15", "v16", "v1A", "v19")


def state_findings(state: dict) -> list[dict]:
    """What the machine looked like at entry, as findings a human should read."""
    out = []
    for vec in _CODE_VECTORS:
        v = state.get("ivt", {}).get(vec)
        if isinstance(v, str) and ":" in v:
            try:
                seg, off = (int(x, 16) for x in v.split(":"))
            except ValueError:
                continue
            lin = seg * 16 + off
            if lin < 0xC0000:
                out.append({"kind": "ivt-rewritten", "vector": vec[1:],
                            "text": f"IVT vector {vec[1:]}h -> {v} (linear {lin:05X}h) is not in ROM: "
                                    "rewritten by earlier software (DOS/loadlin-style hook)"})
    apic = state.get("apic", {})
    if apic and apic.get("present") not in (0, "0"):
        svr, lvt0 = apic.get("svr"), apic.get("lvt0")
        if isinstance(svr, int) and not svr & 0x100:
            out.append({"kind": "apic-disabled", "text": f"local APIC was software-disabled at entry (SVR={svr:08X}h)"})
        if isinstance(lvt0, int) and lvt0 & 0x10000:
            out.append({"kind": "lvt0-masked", "text": f"APIC LVT0 was masked at entry ({lvt0:08X}h): 8259 "
                                                       "interrupts could not reach the CPU"})
        if apic.get("fixed") in (1, "1"):
            out.append({"kind": "apic-repaired", "text": "payload reprogrammed the local APIC to virtual wire"})
    pic = state.get("pic", {})
    if pic.get("mask1") == 0xFF:
        out.append({"kind": "pic-masked", "text": "master 8259 fully masked at entry (timer, keyboard IRQs off)"})
    if pic.get("mask2") == 0xFF:
        out.append({"kind": "pic-masked", "text": "slave 8259 fully masked at entry (RTC, disk IRQs off)"})
    cr0 = state.get("cpu", {}).get("cr0")
    if isinstance(cr0, int) and cr0 & 0x80000000:
        out.append({"kind": "paging-on", "text": f"paging was enabled at entry (CR0={cr0:08X}h)"})
    return out
