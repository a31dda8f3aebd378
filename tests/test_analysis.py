"""Analysis units: live state, verdict edges, findings, signatures, before/after."""

from __future__ import annotations

from kexectest.analysis.before_after import before_after
from kexectest.analysis.core import analyze
from kexectest.analysis.findings import state_findings
from kexectest.analysis.livestate import LiveState
from kexectest.trace import format_line, split_all


def lines(*texts):
    return split_all(("\r\n".join(texts) + "\r\n").encode())


BANNER = format_line("KT banner version=0.1.0 build=AB entry=32 uart=03F8 div=0001 steps=071")


def test_live_state_tracks_steps_and_stops():
    ls = LiveState()
    seq = lines("[ 1.0] kexec_core: Starting new kernel", BANNER, format_line("KT mode real"),
                format_line("KT begin 008 base-mem int=12 ax=0000"))
    assert [ls.feed(x) for x in seq] == [None, None, None, None]
    assert ls.handoff_seen and ls.payload_started and ls.current == (8, "base-mem")
    ls.feed(lines(format_line("KT end 008 base-mem cf=0 eax=0000027F"))[0])
    assert ls.current is None and ls.steps_done == 1
    assert ls.feed(lines("SeaBIOS (version 1.16.2)")[0]) == "reset"
    ls2 = LiveState()
    ls2.feed(lines(BANNER)[0])
    assert ls2.feed(lines(format_line("KT done steps=071 errors=000"))[0]) == "final"
    # after done (int 19h chain) the BIOS banner is expected, not a reset
    assert ls2.feed(lines("Booting from Hard Disk...")[0]) is None


def test_hung_with_silence_and_between_steps():
    seq = lines(BANNER, format_line("KT mode real"), format_line("KT begin 000 state int=00 ax=0000"),
                format_line("KT end 000 state cf=0 eax=00000000"))
    a = analyze(seq, stop_reason="timeout", silence_s=30.0)
    assert a.verdict == "hung" and a.hang["between_steps"] and a.hang["step"] == "apic-fix"
    seq += lines(format_line("KT begin 001 apic-fix int=00 ax=0000"))
    a = analyze(seq, stop_reason="timeout", silence_s=30.0)
    assert a.hang["step"] == "apic-fix" and "30.0 s" in a.one_line()
    assert [s["status"] for s in a.steps[:3]] == ["ok", "hung", "not-reached"]
    b = analyze(seq, stop_reason="interrupted")
    assert b.verdict == "interrupted"
    assert a.signature["id"] != b.signature["id"]


def test_signature_ignores_numbers_and_times():
    one = lines("[ 5.1] kexec_core: Starting new kernel", BANNER, format_line("KT begin 009 e820 int=15 ax=E820 i=0"))
    two = lines("[ 9.7] kexec_core: Starting new kernel", BANNER.replace("build=AB", "build=CD"),
                format_line("KT begin 009 e820 int=15 ax=E820 i=3"))
    two = split_all(b"\r\n".join(x.text.encode() for x in two) + b"\r\n")
    assert analyze(one).signature == analyze(two).signature
    assert "e820" in analyze(one).signature["title"]


def test_bad_checksums_counted_not_decoded():
    good = format_line("KT begin 008 base-mem int=12 ax=0000")
    a = analyze(lines(BANNER, good[:-1] + "0" if good[-1] != "0" else good[:-1] + "1"))
    assert a.garbled["bad_checksum_lines"] == 1
    assert a.hang["between_steps"]  # the damaged begin line was not believed


def test_state_findings():
    st = {"ivt": {"v13": "0070:0100", "v10": "C000:0060", "v41": "9FC0:003D"},
          "apic": {"present": 1, "svr": 0x0F, "lvt0": 0x10700}, "pic": {"mask1": 0xFF, "mask2": 0x00}}
    kinds = [f["kind"] for f in state_findings(st)]
    assert kinds == ["ivt-rewritten", "apic-disabled", "lvt0-masked", "pic-masked"]
    assert state_findings({"ivt": {"v13": "F000:E3FE"}}) == []


def test_before_after_lists_differences():
    snap = {"e820": [{"start": 0, "end": 0x9FBFF, "type": "usable"},
                     {"start": 0x100000, "end": 0x7FDFFFF, "type": "usable"}], "basemem_kib": 639,
            "edd": {"80": {"sectors": 2048}}}
    e820 = [{"base": 0, "length": 0x9FC00, "type": 1}, {"base": 0x100000, "length": 0x7000000, "type": 1}]
    steps = [{"id": "e820", "status": "ok", "result": {}}, {"id": "base-mem", "status": "ok", "result": {"kib": 638}},
             {"id": "edd-check", "status": "ok", "result": {"drives": {"80": {}, "81": {}}}}]
    ba = before_after(snap, e820, steps)
    assert not ba["e820"]["same"] and len(ba["e820"]["only_before"]) == 1
    assert any("base memory: 639 KiB before, 638 KiB after" == d for d in ba["differences"])
    assert any(d.startswith("BIOS drives: 80 before, 80, 81 after") for d in ba["differences"])
    # adjacent ranges of one type compare equal to one merged range; memmap end is inclusive too
    split = [{"base": 0, "length": 0x50000, "type": 1}, {"base": 0x50000, "length": 0x4FC00, "type": 1},
             {"base": 0x100000, "length": 0x7EE0000, "type": 1}]
    assert before_after(snap, split, steps)["e820"]["same"]
    assert before_after(None, e820, steps) == {"available": False, "differences": []}


def test_every_trouble_pattern_is_seen_through_the_hint_filter():
    """trouble_kind skips lines without a TROUBLE_HINTS word: each kind must still be found."""
    from kexectest.analysis.kernel import TROUBLE, trouble_kind
    samples = {
        "cut-here": "[   1.000000] ------------[ cut here ]------------",
        "panic": "[   1.000000] Kernel panic - not syncing: Fatal exception",
        "oops": "[   1.000000] Oops: 0002 [#1] SMP PTI",
        "gpf": "[   1.000000] general protection fault, probably for non-canonical address",
        "sleeping-in-atomic": "[   1.000000] BUG: sleeping function called from invalid context at x.c:1",
        "soft-lockup": "[   1.000000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!",
        "bug": "[   1.000000] kernel BUG at mm/slub.c:305!",
        "warning": "[   1.000000] WARNING: CPU: 0 PID: 1 at kernel/irq/manage.c:2034 free_irq+0x2a1/0x380",
        "hung-task": "[   1.000000] INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
        "rcu-stall": "[   1.000000] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
        "call-trace": "Call Trace:",
        "hard-lockup": "[   1.000000] NMI watchdog: Watchdog detected hard LOCKUP on cpu 1",
        "kdb": "Entering kdb (current=0xffff8882452fb6c0, pid 5646) on processor 1 Oops: (null)",
        "xmon": "cpu 0x0: Vector: 300 (Data Access) at [c0000000fe3f8c0]",
        "purgatory-digest": "sha256 digests do not match :(",
    }
    assert set(samples) == {rule.kind for rule in TROUBLE}
    for kind, text in samples.items():
        assert trouble_kind(text) == next((r.kind, r.fatal) for r in TROUBLE if r.kind == kind), text
    assert trouble_kind("[   1.000000] usb 1-1: new high-speed USB device") is None


def test_step_durations_come_from_the_capture_timestamps():
    """The sweep report's time-per-step chart reads duration_s from report.json."""
    from dataclasses import replace

    def at(t, body):
        return replace(split_all(f"{format_line(body)}\r\n".encode())[0], t=t)

    lines = [at(0.0, "KT banner version=0.1.0 build=AB entry=32 uart=03F8 div=0001 steps=002"),
             at(0.1, "KT begin 000 base-mem int=12 ax=0000"),
             at(0.4, "KT end 000 base-mem cf=0 eax=0000027F ebx=00000000 ecx=00000000 edx=00000000 "
                     "esi=00000000 edi=00000000 ds=2000 es=2000 fl=0246"),
             at(0.5, "KT begin 001 wait int=15 ax=8600")]
    steps = analyze(lines, stop_reason="timeout", silence_s=30).to_dict()["steps"]
    assert steps[0]["duration_s"] == 0.3
    assert "duration_s" not in steps[1]  # hung: its time is the silence, not a duration


def test_edd_before_and_after_kexec_compared_field_by_field():
    """A real two-disk lab capture: the kernel's EDD view (KTSNAP edd) against the payload's
    int 13h answers; a changed MBR signature and sector count after kexec are both reported."""
    from pathlib import Path

    from kexectest.trace import checksum

    log = (Path(__file__).parent / "corpus" / "real-edd-two-disks.log").read_text()
    same = analyze(split_all(log.encode()), stop_reason="replay").to_dict()["before_after"]
    assert same["differences"] == []
    assert {"mbr_signature", "sectors", "legacy_cylinders", "host_bus"} <= set(same["drives"]["compared"]["81"])

    def tamper(line: str) -> str:
        if "KTSNAP edd dev=81" not in line:
            return line
        body = line.split("\t", 1)[-1].rsplit(" ~", 1)[0]
        body = body.replace("mbr_signature=0x4b545331", "mbr_signature=0x12345678")
        body = body.replace("sectors=32768", "sectors=65536", 1)
        return line.split("\t", 1)[0] + "\t" + f"{body} ~{checksum(body.encode()):04X}"

    changed = "\n".join(tamper(ln) for ln in log.splitlines())
    diffs = analyze(split_all(changed.encode()), stop_reason="replay").to_dict()["before_after"]["differences"]
    assert "drive 81h mbr_signature: 12345678h before, 4B545331h after" in diffs
    assert "drive 81h sectors: 65536 before, 32768 after" in diffs


def test_every_architectures_handoff_line():
    """Each row of the hand-off table, as the kernel prints it (with and without timestamp and
    prefix); lines that merely mention the words are not a hand-off."""
    from kexectest.analysis.kernel import HANDOFF_RULES, is_handoff
    samples = ["[   20.100000] kexec_core: Starting new kernel", "[   61.702112] Starting new kernel",
               "[   61.712308] Bye!", "[   42.118011] Will call new kernel at 80200000 from hart id 0",
               "[   42.118152] Bye...", "[   55.301610] kexec: Starting switchover sequence.",
               "KTLOAD exec entry=0x2000c via=syscall"]
    assert all(is_handoff(s) for s in samples)
    assert {src for rx, src in HANDOFF_RULES} == {src for rx, src in HANDOFF_RULES
                                                  if any(rx.search(s.split("] ")[-1]) for s in samples)}
    for not_one in ("root@box:~# echo Bye!", "Bye!!", "[    1.0] systemd[1]: Starting new kernel modules...x"):
        assert not is_handoff(not_one), not_one


def test_live_state_reads_a_repeated_line_once():
    """A banner the wire repeated is not the payload starting again (no reset, no early stop)."""
    ls = LiveState()
    seq = lines("[ 1.0] kexec_core: Starting new kernel", BANNER, BANNER, format_line("KT mode real"),
                format_line("KT begin 008 base-mem int=12 ax=0000"))
    assert [ls.feed(x) for x in seq] == [None] * 5 and ls.current == (8, "base-mem")
    assert ls.feed(lines(BANNER)[0]) == "reset"  # the banner again later: a reset


def test_one_list_of_verdicts_statuses_and_stop_reasons():
    """The report schema's lists are the code's lists (errors.Verdict, model.StepStatus and
    model.StopReason): one source of truth."""
    from kexectest.analysis.model import STEP_STATUSES, STOP_REASONS, VERDICTS
    from reportschema import schema
    s = schema()
    assert s["properties"]["verdict"]["enum"] == list(VERDICTS)
    assert s["$defs"]["step"]["properties"]["status"]["enum"] == list(STEP_STATUSES)
    assert s["properties"]["stop_reason"]["enum"] == list(STOP_REASONS)
    assert s["properties"]["schema_version"]["const"] == analyze(lines(BANNER)).to_dict()["schema_version"]
