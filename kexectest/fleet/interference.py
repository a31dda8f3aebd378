"""What a sweep's configurations prove against each other: the interference findings.

A BIOS concern that fails on one machine and answers on a machine of the same shape (QEMU
machine, memory, CPUs, disks and their bus, firmware, loader, the guest's kernel) that loaded
only some of its guest drivers is a measured fact: leaving the other drivers out made that BIOS service work there.
Only such pairs are findings -- two runs of the same sweep, each a real kexec -- never a table
of likely causes.  The shape and drivers come from each bundle's environment.json.
"""

from __future__ import annotations

from .sweep_matrix import FAILING, failing_device


def _concern_steps(m: dict, concern: str) -> list[dict]:
    return [s for s in m["steps"] if str(s.get("group") or "other") == concern]


def _answers(m: dict, concern: str) -> bool:
    steps = _concern_steps(m, concern)
    return bool(steps) and all(s.get("status") in ("ok", "skipped") for s in steps)


def findings(machines: list[dict]) -> list[dict]:
    """One finding per failing (machine, concern) that a machine of the same shape with a
    subset of its drivers answers; the smallest such subset's machine is named."""
    out = []
    for m in machines:
        lab = m.get("lab") or {}
        if not lab.get("shape") or not m["steps"]:
            continue
        mine = set(lab.get("drivers") or ())
        concerns = list(dict.fromkeys(str(s.get("group") or "other") for s in m["steps"]
                                      if s.get("status") in FAILING))
        for concern in concerns:
            peers = [p for p in machines if p is not m and (p.get("lab") or {}).get("shape")
                     == lab["shape"] and (p.get("lab") or {}).get("loader") == lab.get("loader")
                     and p["lab"].get("kernel") == lab.get("kernel")
                     and set(p["lab"].get("drivers") or ()) < mine and _answers(p, concern)]
            if not peers:
                continue
            peer = max(peers, key=lambda p: len(p["lab"].get("drivers") or ()))
            kept = [d for d in lab["drivers"] if d in set(peer["lab"].get("drivers") or ())]
            left_out = [d for d in lab["drivers"] if d not in kept]
            bad = [s for s in _concern_steps(m, concern) if s.get("status") in FAILING]
            dev = failing_device(m, bad)
            where = (f" (the device behind it: {dev.get('bdf')} {dev.get('class')}, held by "
                     f"{dev.get('linux_driver') or 'no Linux driver'} before kexec)" if dev else "")
            with_ = ", ".join(lab["drivers"])
            only = (f"with only {', '.join(kept)}" if kept else "with none of them"
                    if len(lab["drivers"]) > 1 else "without it")
            out.append({
                "machine": m["name"], "concern": concern, "steps": [s["id"] for s in bad],
                "drivers": list(lab["drivers"]), "answers_on": peer["name"], "kept": kept,
                "left_out": left_out, "device": dev,
                "sentence": (f"{concern} fails on {m['name']} with {with_} loaded before "
                             f"kexec ({', '.join(f'{s} {st}' for s, st in ((s['id'], s['status']) for s in bad[:3]))})"
                             f"{where}; {peer['name']}, the same machine {only}, answers every "
                             f"{concern} step: without {', '.join(left_out)} the BIOS's "
                             f"{concern} service works there")})
    return out
