"""The reports in a real browser: Debian's headless Chromium, driven by Playwright (which uses
the installed /usr/bin/chromium and downloads nothing), at a 1366x768 window, checked from the
DOM: the sweep matrix is no wider than the window in its collapsed view and expands by concern,
the time chart has bars that are not zero, the memory map renders, nothing is fetched."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from kexectest.analysis.replay import analyze_bytes
from kexectest.errors import VERDICT_EXIT
from kexectest.fleet.sweep_report import build_sweep, write_reports
from kexectest.fsutil import write_atomic
from kexectest.output.bundle import write_pages
from kexectest.output.report import render_summary_md
from test_target_time import _relined

CORPUS = Path(__file__).parent / "corpus"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WINDOW = {"width": 1366, "height": 768}
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                    reason="Debian's chromium is not installed")


def _us(n: int) -> str:
    return f"{(n * 7919) % 9000 + 1:08X}"  # a different time for every call, none zero


# machine -> (log, end lines given a us= field)
MACHINES = {
    "timed-q35": ("real-syscall-q35.log", True),
    "hung-edd": ("hung-edd-params.log", True),
    "failed": ("failed-steps.log", False),
    "completed-pc": ("completed.log", True),
}


def sweep_from_corpus(tmp: Path) -> Path:
    """A sweep directory whose bundles are made from corpus logs by the real analysis and page
    writers (a real capture with times on its end lines, a hang, failed steps), and a machine
    that never ran."""
    root = tmp / "sweep"
    records = []
    for name, (log, timed) in MACHINES.items():
        text = (CORPUS / log).read_text()
        raw = _relined(text, lambda b, n: f"{b} us={_us(n)}") if timed else text.encode()
        a = analyze_bytes(raw)
        b = root / name / "bundle"
        b.mkdir(parents=True)
        write_atomic(b / "report.json", json.dumps(a.to_dict()))
        write_atomic(b / "summary.md", render_summary_md(a))
        write_pages(b, a.to_dict(), (ln.text for ln in a.lines))
        records.append({"machine": name, "kind": "virtual", "verdict": a.verdict,
                        "exit_code": int(VERDICT_EXIT[a.verdict]), "one_line": a.summary,
                        "bundle": f"{name}/bundle", "seconds": 5.0})
    records.append({"machine": "dead", "verdict": "error", "exit_code": 14, "one_line": "",
                    "error": "cannot open socket://127.0.0.1:1: connection refused"})
    t = time.time()
    write_reports(root, build_sweep(root, {"name": "corpus"}, records, t - 60, t))
    return root


@contextmanager
def browser(tmp: Path):
    """A page at 1366x768 in a fresh Chromium profile; every request it makes is recorded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport=WINDOW)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.requests = []
            page.on("request", lambda r: page.requests.append(r.url))
            yield page
        finally:
            ctx.close()


def _box(page, selector: str) -> dict:
    return page.eval_on_selector(selector, "e => { const r = e.getBoundingClientRect(); "
                                           "return {x: r.x, y: r.y, w: r.width, h: r.height}; }")


def _shown(page, selector: str) -> int:
    return page.eval_on_selector_all(
        selector, "es => es.filter(e => getComputedStyle(e).display !== 'none').length")


def _bars(page, selector: str = "#timing rect.bar") -> list[float]:
    return page.eval_on_selector_all(selector, "es => es.map(e => e.getBBox().width)")


def check_sweep_page(page, url: str, expect_target: bool = True) -> dict:
    """The checks a person's first look makes, from the DOM."""
    page.goto(url)
    facts = {}
    # the collapsed matrix fits the window: no horizontal scroll, in its box or on the page
    wrap = page.eval_on_selector(".mwrap", "e => ({sw: e.scrollWidth, cw: e.clientWidth})")
    facts["matrix_width"] = _box(page, "#matrix")["w"]
    assert facts["matrix_width"] <= WINDOW["width"] and wrap["sw"] <= wrap["cw"], (facts, wrap)
    assert page.evaluate("document.documentElement.scrollWidth") <= WINDOW["width"]
    assert _shown(page, "#matrix th.s") == 0 and _shown(page, "#matrix th.g") > 5
    # cells say their result on hover and link to the step in that machine's page
    cell = page.eval_on_selector("#matrix td.c.g[data-group-status='hung']",
                                 "e => [e.title, e.querySelector('a').getAttribute('href')]") \
        if page.query_selector("#matrix td.c.g[data-group-status='hung']") else None
    if cell:
        assert "hung" in cell[0] and "summary.html#step-" in cell[1]
    # a concern expands into its steps; the machine names stay when the matrix scrolls
    disk = page.eval_on_selector_all("#matrix th.s.s-disk", "es => es.length")
    page.click("#matrix th.g-disk label")
    assert _shown(page, "#matrix th.s") == disk > 0
    page.click("label[for=x-all]")
    assert _shown(page, "#matrix th.s") == page.eval_on_selector_all("#matrix th.s", "es => es.length")
    name_x = _box(page, "#matrix tbody th.m")["x"]
    page.eval_on_selector(".mwrap", "e => { e.scrollLeft = 600; }")
    assert page.eval_on_selector(".mwrap", "e => e.scrollLeft") > 0  # every step: it scrolls
    assert abs(_box(page, "#matrix tbody th.m")["x"] - name_x) < 1  # sticky machine names
    # the time chart: bars that are not zero, longest first
    bars = _bars(page)
    facts["bars"] = len(bars)
    assert bars and min(bars) > 0 and bars == sorted(bars, reverse=True)
    if expect_target:
        assert page.eval_on_selector_all("#timing rect.bar.target", "es => es.length") > 0
    # the memory maps render: boxes with area, one rect per range
    maps = page.eval_on_selector_all(
        "svg.kt-memmap", "es => es.map(e => { const r = e.getBoundingClientRect(); return "
                         "[r.width, r.height, e.querySelectorAll('rect.range').length]; })")
    facts["maps"] = maps
    assert maps and all(w > 100 and h > 100 and n > 0 for w, h, n in maps), maps
    assert not [u for u in page.requests if not u.startswith(("file:", "data:", "about:"))]
    return facts


@needs_chromium
def test_sweep_report_in_chromium(tmp_path):
    root = sweep_from_corpus(tmp_path)
    with browser(tmp_path) as page:
        facts = check_sweep_page(page, (root / "report.html").as_uri())
        assert len(facts["maps"]) == len(MACHINES)
        # a hung machine's disk cell links to the hung step on its page, where the row is
        href = page.eval_on_selector("tr[data-machine='hung-edd'] td.g-disk a", "e => e.href")
        assert href.endswith("hung-edd/bundle/summary.html#step-041-edd-params")
        page.goto(href)
        assert page.eval_on_selector("tr:target", "e => e.id") == "step-041-edd-params"


@needs_chromium
def test_bundle_pages_in_chromium(tmp_path):
    root = sweep_from_corpus(tmp_path)
    b = root / "timed-q35" / "bundle"
    with browser(tmp_path) as page:
        page.goto((b / "summary.html").as_uri())
        bars = _bars(page)
        assert bars and min(bars) > 0 and bars == sorted(bars, reverse=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= WINDOW["width"]
        box = _box(page, "#memory-map svg.kt-memmap")
        assert box["w"] > 300 and box["h"] > 300
        assert page.eval_on_selector_all("#steps tbody tr", "es => es.length") == 71
        page.goto((b / "memory-map.svg").as_uri())  # the picture alone, as a file viewer opens it
        root_el = page.evaluate("document.documentElement.tagName")
        ranges = page.eval_on_selector_all(
            "rect.range", "es => es.map(e => { const b = e.getBBox(); return b.width * b.height; })")
        report = json.loads((b / "report.json").read_text())
        assert root_el == "svg" and len(ranges) >= len(report["e820"]) and min(ranges) > 0
        assert not [u for u in page.requests if not u.startswith(("file:", "data:", "about:"))]


@pytest.mark.qemu
@needs_chromium
def test_a_virtual_sweep_in_chromium(tmp_path, lab_image):
    """`kexectest sweep labs/virtual.toml` for real (a machine that kexecs from Linux and one
    SeaBIOS boots straight into the payload): its report fits the window, its chart is the
    targets' time, its memory maps are pictures (the Linux machine's with the kernel's view)."""
    import subprocess
    import sys

    out = tmp_path / "sweep"
    lab = Path(__file__).resolve().parents[1] / "labs" / "virtual.toml"
    p = subprocess.run([sys.executable, "-m", "kexectest", "sweep", str(lab), "--only",
                        "pc-256,pc-direct", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout + p.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    for m in sweep["machines"]:
        ran = [s for s in m["steps"] if s["status"] == "ok"]
        assert ran and all(isinstance(s["target_us"], int) for s in ran), m["name"]
        assert m["clock"].startswith("Times measured on the target"), m["clock"]
    with browser(tmp_path) as page:
        facts = check_sweep_page(page, (out / "report.html").as_uri())
        assert len(facts["maps"]) == 2
        names = page.eval_on_selector_all(
            "figure.mm[data-machine='pc-256'] text.map-name", "es => es.map(e => e.textContent)")
        assert names == ["before kexec", "after kexec"]
        longest = page.eval_on_selector("#timing rect.bar title", "e => e.textContent")
        assert longest.startswith(("067 tick-advance", "068 wait")), longest
