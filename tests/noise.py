"""The noise campaign's two halves, shared by tests/test_noise.py (bounded, in CI) and
benchmarks/bench_noise.py (the long run): damage a real capture the way a serial line does, and
judge whether the analysis of the damaged copy claims anything the undamaged evidence does not.

A wrong diagnosis is a verdict or a cause the original does not support: a verdict other than
the original's (``garbled`` and ``interrupted`` claim nothing about the firmware and are always
honest), a step whose status is neither the original's nor ``unknown``/``not-reached``, a
``completed`` or ``failed-steps`` whose steps are not all there as in the original (a classic
transcript may lose only its final ``Halting.``), a hang or reset at another step, kernel
trouble, before/after differences or machine-state findings the original does not have.
"""

from __future__ import annotations

import math
import random
import re

_TS = re.compile(rb"^\+[0-9]+\.[0-9]+\t")
HONEST = ("garbled", "interrupted")
KINDS = ("flip", "drop", "dup")
RATES = (1e-4, 1e-3, 1e-2)


def _positions(n: int, rate: float, rng: random.Random):
    """Indices in range(n), each chosen with probability `rate` (geometric gaps)."""
    if rate <= 0 or n <= 0:
        return
    log_q = math.log1p(-rate)
    i = -1
    while True:
        i += 1 + int(math.log(1.0 - rng.random()) / log_q)
        if i >= n:
            return
        yield i


def flip_bits(data: bytes, rate: float, rng: random.Random) -> bytes:
    """Every bit flipped with probability `rate`, as on the wire: a collector's console.log
    keeps its own timestamps and line ends (only the text after the tab came over the line);
    a raw capture is flipped whole, line ends included."""
    lines = data.split(b"\n")
    timestamped = sum(1 for ln in lines[:20] if _TS.match(ln)) >= min(10, len(lines) // 2)
    out = []
    for ln in (lines if timestamped else [data]):
        head = _TS.match(ln).end() if timestamped and _TS.match(ln) else 0
        body = bytearray(ln[head:])
        for bit in _positions(len(body) * 8, rate, rng):
            body[bit >> 3] ^= 1 << (bit & 7)
        out.append(ln[:head] + bytes(body))
    return b"\n".join(out) if timestamped else out[0]


def drop_lines(data: bytes, rate: float, rng: random.Random) -> bytes:
    lines = data.splitlines(keepends=True)
    gone = set(_positions(len(lines), rate, rng))
    return b"".join(ln for i, ln in enumerate(lines) if i not in gone)


def dup_lines(data: bytes, rate: float, rng: random.Random) -> bytes:
    lines = data.splitlines(keepends=True)
    twice = set(_positions(len(lines), rate, rng))
    return b"".join(ln * (2 if i in twice else 1) for i, ln in enumerate(lines))


MUTATE = {"flip": flip_bits, "drop": drop_lines, "dup": dup_lines}


def mutate(data: bytes, kind: str, rate: float, rng: random.Random) -> bytes:
    return MUTATE[kind](data, rate, rng)


# kinds that only name a block's shape: a damaged line can split a panic's block so that its
# call trace stands alone, which claims nothing new
_SHAPES = {"call-trace", "cut-here"}


def _kinds(d: dict) -> set[str]:
    return {t["kind"] for t in d.get("kernel_trouble") or []} - _SHAPES


def wrong_diagnosis(orig: dict, mut: dict) -> list[str]:
    """What the damaged copy's report claims that the original's evidence does not support."""
    bad = []
    if mut["verdict"] not in (orig["verdict"], *HONEST):
        bad.append(f"verdict {mut['verdict']} (original {orig['verdict']}): {mut['summary'][:120]}")
    steps = {s["index"]: s for s in orig.get("steps") or []}
    if mut["verdict"] in ("completed", "failed-steps"):  # claims every step answered
        m = {s["index"]: s["status"] for s in mut.get("steps") or []}
        lost_last = [s for s in steps.values() if m.get(s["index"]) != s["status"]]
        if len(m) != len(steps) or len(lost_last) > (1 if orig["source"] == "classic" else 0) or any(
                m[s["index"]] != "not-reached" or s["index"] != max(steps) for s in lost_last):
            bad.append(f"{mut['verdict']} with {len(m)} steps, {len(lost_last)} not as in the original")
    for s in mut.get("steps") or []:
        o = steps.get(s["index"])
        ok = {"unknown", "not-reached"} | ({o["status"]} if o and o["id"] == s["id"] else set())
        if s["status"] not in ok:
            bad.append(f"step {s['index']:03d} {s['id']} {s['status']} (original "
                       f"{o['status'] if o else 'absent'})")
    for key in ("hang", "reset"):
        m, o = mut.get(key), orig.get(key)
        if mut["verdict"] == key.replace("hang", "hung") and m and m.get("step"):
            if not o or (m.get("index"), m.get("between_steps")) != (o.get("index"), o.get("between_steps")):
                bad.append(f"{key} at {m.get('step')} (original {o.get('step') if o else None})")
    new_trouble = _kinds(mut) - _kinds(orig)
    if new_trouble and mut["verdict"] not in HONEST:
        bad.append(f"kernel trouble {sorted(new_trouble)} the original does not show")
    diffs = set((mut.get("before_after") or {}).get("differences") or []) - set(
        (orig.get("before_after") or {}).get("differences") or [])
    if diffs:
        bad.append(f"before/after differences {sorted(diffs)[:2]}")
    finds = {f["kind"] for f in mut.get("findings") or []} - {f["kind"] for f in orig.get("findings") or []}
    if finds:
        bad.append(f"findings {sorted(finds)}")
    return bad
