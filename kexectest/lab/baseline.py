"""`kexectest lab run --baseline`: the same machine shape twice -- the firmware booting the
payload from its disk image at POST, then Linux + kexec -- and one bundle with both captures and
the differences (analysis/baseline.py).

Both runs have exactly the same devices: the payload's disk image is the first disk of both
(the Linux run boots by -kernel, or under the Bochs BIOS from its CD, which the POST run carries
too), the lab's disks after it, the 9p host share in both.  Injected faults (`hang_at`,
`reset_at`) are for the run after kexec only: the POST run is the clean baseline.  The Linux run
boots cold: its first disk is this payload build's image, a shape no saved state fits.

The bundle is the Linux run's, with the POST run's bundle as its `post/` directory; report.json
carries `baseline`, summary.md its section, environment.json `lab.baseline`; the tarball is made
again with `post/` in it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis import baseline as bl
from ..errors import Exit, KexectestError
from ..output.bundle import finalize
from ..output.report import render_summary_md, report_dict
from . import firmware as fw
from .shape import Shape

POST_DIR = "post"
FAULTS = ("hang_at", "reset_at")  # the run after kexec's alone


@dataclass
class BaselineResult:
    """A baseline run: the Linux run's SessionResult (whose bundle holds both), the POST run's,
    and the comparison.  Reads like a SessionResult (verdict, exit status, bundle)."""

    kexec: Any  # capture.session.SessionResult
    post: Any
    baseline: dict
    tarball: Path | None

    verdict = property(lambda self: self.kexec.verdict)
    exit_code = property(lambda self: self.kexec.exit_code)
    bundle_dir = property(lambda self: self.kexec.bundle_dir)
    analysis = property(lambda self: self.kexec.analysis)

    def report(self) -> dict:
        return report_dict(self.analysis, self.baseline)


def _environment(bundle: Path) -> dict:
    try:
        return json.loads((bundle / "environment.json").read_text())
    except (OSError, ValueError):
        return {}


def compare_runs(post, kexec, post_env: dict, kexec_env: dict) -> dict:
    """report.json's `baseline` for two lab runs; a refusal is kept as `refused`, since the
    bundle is written whatever the runs did."""
    sides = [bl.Capture(r.analysis.to_dict(), src, env, bl.pci_functions(r.analysis.lines))
             for r, src, env in ((post, POST_DIR, post_env), (kexec, ".", kexec_env))]
    try:
        return bl.compare(*sides)
    except KexectestError as exc:
        d = sides[0].report
        return {"source": POST_DIR, "post": {"verdict": d.get("verdict"),
                                             "summary": d.get("summary"), "via": sides[0].via,
                                             "build_id": (d.get("payload") or {}).get("build_id")},
                "differences": [], "refused": str(exc).removeprefix("baseline refused: ")}


def run_baseline(machine: Any = "pc", *, loader: str = "syscall", out_dir: Path | str = "out",
                 redact: bool = False, log=None, **kw) -> BaselineResult:
    """POST, then `loader` (syscall or kexec-tools) on the same shape; see the module's doc."""
    from .runner import resolve_agent, run_virtual

    if loader == "direct":
        raise KexectestError("lab: --baseline compares a run after kexec with POST: it needs "
                             "a kexec loader (syscall or kexec-tools), not direct", Exit.CONFIG)
    log = log or (lambda msg: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kw.pop("cold", None)
    with tempfile.TemporaryDirectory(prefix=".baseline-", dir=out_dir) as tmp:
        log("baseline: the firmware boots the payload's disk image (POST)")
        # the POST run has no Linux: the faults and the guest's drivers are the kexec run's
        post_kw = {k: v for k, v in kw.items() if k not in FAULTS and k != "drivers"}
        # the same devices as the kexec run: the host share's virtio device where it takes it
        firm = fw.get(Shape.of(machine, firmware=kw.get("firmware")).firmware)
        share = resolve_agent(kw.get("agent", "auto"), loader, kw.get("drivers"), firm) == "9p"
        post = run_virtual(machine, loader="direct", post=True, post_share=share,
                           out_dir=Path(tmp), redact=redact, log=log, **post_kw)
        image = Path(tmp) / "payload-direct.img"
        log(f"baseline: POST {post.verdict}; now Linux + kexec ({loader}) on the same machine")
        kexec = run_virtual(machine, loader=loader, out_dir=out_dir, redact=redact, log=log,
                            boot_image=image, cold=True, **kw)
        bundle = Path(kexec.bundle_dir)
        shutil.move(str(post.bundle_dir), str(bundle / POST_DIR))
    env = _environment(bundle)
    baseline = compare_runs(post, kexec, _environment(bundle / POST_DIR), env)
    env.setdefault("lab", {})["baseline"] = {
        "post": POST_DIR, "post_verdict": post.verdict, "differences": len(baseline["differences"]),
        "refused": baseline.get("refused")}
    n = len(baseline["differences"])
    log(f"baseline: {baseline['refused']}" if baseline.get("refused") else
        f"baseline: {n} difference(s) from POST")
    tarball = finalize(bundle, report=report_dict(kexec.analysis, baseline),
                       summary=render_summary_md(kexec.analysis, env, baseline=baseline),
                       environment=env, redact=redact)
    return BaselineResult(kexec, post, baseline, tarball)
