"""The pages people look at, as units: the memory-map picture, the time chart, summary.md's
anchors and time section, the bundle's summary.html and memory-map.svg, the sweep's grouped
matrix.  (tests/test_browser.py opens them in Chromium.)"""

from __future__ import annotations

import json
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

from kexectest.analysis.replay import analyze_bytes
from kexectest.output import bundle, memmap_svg, summary_html, timechart
from kexectest.output.report import render_summary_md, step_anchor
from test_target_time import _relined

CORPUS = Path(__file__).parent / "corpus"
SVG = "{http://www.w3.org/2000/svg}"
GIB = 1 << 30


def _timed_analysis(log="real-syscall-q35.log", us=lambda n: f"{(n * 7919) % 5000 + 1:08X}"):
    raw = _relined((CORPUS / log).read_text(), lambda body, n: f"{body} us={us(n)}")
    return analyze_bytes(raw)


def _rects(svg: str, cls: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [r for r in root.iter(f"{SVG}rect") if cls in (r.get("class") or "").split()]


# --- the memory map -------------------------------------------------------------------------------

def test_memory_map_draws_640k_and_5g_on_one_readable_axis():
    low = [(0, 0x9FBFF, 1), (0x9FC00, 0x9FFFF, 2), (0xF0000, 0xFFFFF, 2), (0x100000, 0xBFFDFFFF, 1),
           (0xFFFC0000, 0xFFFFFFFF, 2), (0x100000000, 0x13FFFFFFF, 1)]
    svg = memmap_svg.render([memmap_svg.MemMap("after kexec", "payload", low)])
    ranges = _rects(svg, "range")
    assert len(ranges) == len(low)
    heights = {r.find(f"{SVG}title").text.split()[-2]: float(r.get("height")) for r in ranges}
    h = [float(r.get("height")) for r in ranges]
    assert min(h) >= memmap_svg.ROW_MIN and max(h) < 200  # 1 KiB and 3 GiB both readable
    by_size = sorted(zip([e - s + 1 for s, e, _t in low], h))
    assert [x for _s, x in by_size] == sorted(x for _s, x in by_size)  # bigger is taller
    assert heights  # every range has its exact addresses on hover
    assert "0x1_4000_0000" in svg and "5 GiB" in svg and "639 KiB" in svg
    assert "differs" not in svg  # one map: nothing to compare


def test_memory_map_marks_where_maps_differ():
    before = [(0, 0x9FBFF, 1), (0x100000, 0x7FDFFFF, 1), (0x7FE0000, 0x7FFFFFF, 2)]
    after = [(0, 0x9FBFF, 1), (0x100000, 0x6FFFFFF, 1), (0x7000000, 0x7FFFFFF, 2)]
    same = memmap_svg.render([memmap_svg.MemMap("a", "", before), memmap_svg.MemMap("b", "", before)])
    assert not _rects(same, "diff")
    svg = memmap_svg.render([memmap_svg.MemMap("before kexec", "", before),
                             memmap_svg.MemMap("after kexec", "", after)])
    diffs = _rects(svg, "diff")
    assert len(diffs) == 1 and "0x7000000-0x7fdffff" in diffs[0].find(f"{SVG}title").text
    assert "the maps differ (1 rows)" in svg


def test_named_maps_from_a_report_and_its_snapshot():
    a = analyze_bytes((CORPUS / "real-syscall-q35.log").read_bytes())
    maps = memmap_svg.memory_maps(a.to_dict(), (ln.text for ln in a.lines))
    assert [m.name for m in maps] == ["before kexec", "after kexec"]
    assert len(maps[1].ranges) == len(a.e820) and maps[0].ranges
    handed = dict(a.to_dict(), handoff_params={"e820": [{"addr": 0, "size": 0x9FC00, "type": 1}]})
    names = [m.name for m in memmap_svg.named_maps(handed, None)]
    assert names == ["handed over", "after kexec"]  # any number of named maps
    svg = memmap_svg.render(memmap_svg.named_maps(handed, None))
    assert len(ET.fromstring(svg).findall(f".//{SVG}text[@class='map-name']")) == 2
    # a damaged E820 step: the column says why it is empty, no range is drawn from it
    broken = dict(a.to_dict(), e820=[])
    broken["steps"] = [dict(s, status="unknown") if s["id"] == "e820" else s for s in broken["steps"]]
    maps = memmap_svg.named_maps(broken, {"e820": [{"start": 0, "end": 0x9FBFF, "type": "usable"}]})
    assert maps[-1].note == "not shown: the E820 step is unknown" and not maps[-1].ranges
    assert memmap_svg.render([memmap_svg.MemMap("x")]) is None


# --- the time chart -------------------------------------------------------------------------------

def test_chart_shows_the_steps_that_took_time_longest_first():
    rows = [timechart.Row(f"{i:03d} s{i}", us) for i, us in enumerate([0, 5, 120_000, 0, 40, 3])]
    html = timechart.chart(rows, limit=3)
    svg = html[html.index("<svg"):html.index("</svg>") + 6]
    bars = _rects(svg, "bar")
    assert [b.find(f"{SVG}title").text.split(":")[0] for b in bars] == ["002 s2", "004 s4", "001 s1"]
    assert all(float(b.get("width")) > 0 for b in bars)
    assert "1 more step took 3 \u00b5s together; 2 steps took no measurable time" in html
    assert "measured on the target" in html
    nothing = timechart.chart([timechart.Row("000 a", 0), timechart.Row("001 b", 0)])
    assert "<svg" not in nothing and "took no measurable time" in nothing


def test_chart_says_when_time_is_the_hosts():
    steps = [{"index": 0, "id": "a", "duration_s": 0.2}, {"index": 1, "id": "b", "target_us": 90}]
    rows = summary_html.time_rows(steps)
    assert [(r.source, r.us) for r in rows] == [("host", 200_000.0), ("target", 90.0)]
    html = timechart.chart(rows)
    assert "grey bars are host time stamps" in html and 'class="bar host"' in html


# --- summary.md and the bundle's pages ------------------------------------------------------------

def test_summary_md_anchors_every_step_and_says_where_the_time_went():
    a = _timed_analysis()
    md = render_summary_md(a)
    for s in a.to_dict()["steps"]:
        assert f'<a id="{step_anchor(s)}"></a>' in md
    section = md[md.index("### Where the time went"):]
    longest = max(a.to_dict()["steps"], key=lambda s: s["target_us"] or 0)
    assert "Times measured on the target" not in section  # this log has no calibration line
    first = section.split("\n- ", 1)[1]
    assert first.startswith(f"`{longest['index']:03d}` `{longest['id']}`")
    assert "[memory-map.svg](memory-map.svg)" in md and "[summary.html](summary.html)" in md


def test_bundle_writes_the_picture_and_the_page(tmp_path):
    a = _timed_analysis()
    run = tmp_path / "run-x"
    run.mkdir()
    raw = _relined((CORPUS / "real-syscall-q35.log").read_text(), lambda b, n: b)
    (run / "console.raw").write_bytes(raw)
    (run / "console.log").write_bytes(raw)
    tarball = bundle.finalize(run, report=a.to_dict(), summary=render_summary_md(a),
                              environment={})
    svg = (run / "memory-map.svg").read_text()
    page = (run / "summary.html").read_text()
    assert len(_rects(svg, "range")) >= len(a.e820)
    assert svg in page and page.count('<tr id="step-') == len(a.steps)
    assert 'id="timing"' in page and "<script" not in page
    with tarfile.open(tarball) as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"memory-map.svg", "summary.html", "summary.md", "report.json"} <= names


def test_report_command_writes_the_pages(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "kexectest", "report", str(CORPUS / "hung-edd-params.log"),
                        "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    page = (tmp_path / "summary.html").read_text()
    assert '<a href="#step-041-edd-params">edd-params</a>' in page
    assert (tmp_path / "memory-map.svg").read_text().startswith(
        '<svg xmlns="http://www.w3.org/2000/svg" class="kt-memmap"')


# --- the sweep's matrix ---------------------------------------------------------------------------

def test_sweep_matrix_groups_steps_by_concern(tmp_path):
    from test_browser import MACHINES, sweep_from_corpus

    root = sweep_from_corpus(tmp_path)
    sweep = json.loads((root / "sweep.json").read_text())
    m = {x["name"]: x for x in sweep["machines"]}
    edd = next(s for s in m["hung-edd"]["steps"] if s["id"] == "edd-params")
    assert (edd["group"], edd["anchor"], edd["status"]) == ("disk", "step-041-edd-params", "hung")
    timed = [s for s in m["timed-q35"]["steps"] if s["status"] == "ok"]
    assert timed and all(isinstance(s["target_us"], int) for s in timed)
    text = (root / "report.html").read_text()
    heads = re.findall(r'<th class="g g-([a-z0-9-]+)( fail)?"', text)
    assert heads[0][1] == " fail"  # concerns with a failure first
    assert {h for h, _f in heads} == {"state", "memory", "a20", "keyboard", "system", "apm", "disk",
                                      "video", "time", "pci", "boot"}
    assert 'href="hung-edd/bundle/summary.html#step-041-edd-params"' in text
    assert text.count('class="kt-memmap"') == len(MACHINES)  # every bundle's; "dead" has none


def test_memory_map_of_a_console_that_repeats_without_end_stays_bounded():
    snap = {"e820": [{"start": i * 0x1000, "end": i * 0x1000 + 0x7FF, "type": "usable"}
                     for i in range(5000)]}
    maps = memmap_svg.named_maps({"e820": []}, snap)
    assert len(maps[0].ranges) == memmap_svg.MAX_RANGES
    assert maps[0].note == "the first 256 of its 5000 ranges drawn"
    assert len(_rects(memmap_svg.render(maps), "range")) == memmap_svg.MAX_RANGES
