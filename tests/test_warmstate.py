"""Warm starts on the real lab (QEMU/TCG, SeaBIOS, the lab's Debian kernel): a restored machine
answers the payload as a cold-booted one does; every kind of bad state is one line and a cold
boot; a guest that cannot boot is not saved; concurrent first runs of one shape save one
state; the monitor protocol against a real QEMU; and the pure parts (key, validation, pruning)
on files made here."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kexectest.errors import Exit
from kexectest.lab import qemu as lq
from kexectest.lab import warmstate as ws
from kexectest.lab.qmp import QmpError

REPO = Path(__file__).resolve().parents[1]


def _machine(img, out: Path | None = None, **kw) -> lq.Qemu:
    """A lab machine as runner.py makes one for `run_virtual("pc")`."""
    kw = {"machine": "pc", "memory_mib": 256, "smp": 1, "accel": "tcg",
          "disks": img.disks[:1], "append": img.cmdline, **kw}
    return lq.Qemu(kernel=img.kernel, initrd=img.initrd, share_host=True,
                   no_reboot=False, time_limit=300, out_dir=out, **kw)


def _login_prompt(q: lq.Qemu, timeout: float = 120, until: bytes = b"login: ") -> bytes:
    """Connect to COM1 as the collector does and read up to getty's prompt (or `until`)."""
    buf = b""
    with socket.create_connection(("127.0.0.1", q.port)) as s:
        s.settimeout(timeout)
        while not (buf.endswith(until) if until == b"login: " else until in buf):
            data = s.recv(65536)
            if not data:
                raise AssertionError(f"console closed before the login prompt: {buf[-200:]!r}")
            buf += data
    return buf


@pytest.fixture(scope="module")
def saved_state(lab_image):
    """The saved state of the pc/256 MiB/1 disk shape in the default cache (saved if missing)."""
    q = _machine(lab_image)
    start = ws.launch(q)
    with q:
        _login_prompt(q)
    assert start.kind == "warm", start.reason
    return start.state


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache root of this test's own: its states can be damaged without harm to others."""
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("KEXECTEST_CACHE", str(root))
    return root


def _copy_state(state: Path, cache: Path) -> Path:
    dest = cache / "states" / state.name
    shutil.copytree(state, dest)
    return dest


def _rewrite_meta(state: Path, **changes) -> None:
    meta = json.loads((state / ws.META_FILE).read_text())
    meta.update(changes)
    (state / ws.META_FILE).write_text(json.dumps(meta))


# ------------------------------------------------------------------ pure parts


def test_key_follows_shape_and_files(tmp_path):
    kernel, initrd, disk = (tmp_path / n for n in ("vmlinuz", "initrd", "disk"))
    for f in (kernel, initrd, disk):
        f.write_bytes(b"x" * 64)

    def key(**kw):
        q = lq.Qemu(accel="tcg", kernel=kernel, initrd=initrd, append="console=ttyS0",
                    disks=[disk], share_host=True, **kw)
        return ws.state_key(ws.key_inputs(q))

    base = key()
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    assert key() == base  # nothing changed, same state
    assert len({base, key(memory_mib=512), key(machine="q35"), key(smp=2)}) == 4
    os.utime(disk, ns=(1, 1))  # a rebuilt image: same path, other file
    assert key() != base
    other = tmp_path / "trixie"  # another kernel's image: its own files, its own state
    other.mkdir()
    for f in (kernel, initrd, disk):
        (other / f.name).write_bytes(f.read_bytes())
    q = lq.Qemu(accel="tcg", kernel=other / "vmlinuz", initrd=other / "initrd",
                append="console=ttyS0", disks=[other / "disk"], share_host=True)
    assert ws.state_key(ws.key_inputs(q)) != key()
    inputs = ws.key_inputs(lq.Qemu(accel="tcg"))
    assert inputs["qemu"]["version"].startswith("QEMU emulator version")
    assert "bios-256k.bin" in inputs["firmware"]  # SeaBIOS is part of the key


def _fake_state(root: Path, inputs: dict, data: bytes = b"state" * 100) -> Path:
    import hashlib

    d = root / "states" / ws.state_key(inputs)
    d.mkdir(parents=True)
    (d / ws.STATE_FILE).write_bytes(data)
    (d / ws.META_FILE).write_text(json.dumps({
        "inputs": inputs, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "saved": "2026-01-01T00:00:00+00:00"}))
    return d


def test_validate_names_what_is_wrong(tmp_path):
    inputs = {"warm": ws.WARM_VERSION, "argv": ["qemu"], "files": [],
              "qemu": {"version": "QEMU emulator version 7.2.22"}, "firmware": {}}
    d = _fake_state(tmp_path, inputs)
    saved = ws.Saved(d)
    saved.validate(inputs)  # a good one passes
    saved.start_checking()
    saved.check()
    saved.close()

    other = dict(inputs, qemu={"version": "QEMU emulator version 8.2.0"})
    saved = ws.Saved(d)
    with pytest.raises(ws.Unusable) as e:
        saved.validate(other)
    saved.close()
    assert e.value.damaged and "QEMU emulator version 7.2.22, this is QEMU emulator version 8.2.0" \
        in str(e.value)

    with open(d / ws.STATE_FILE, "r+b") as f:
        f.truncate(100)
    saved = ws.Saved(d)
    with pytest.raises(ws.Unusable) as e:
        saved.validate(inputs)
    saved.close()
    assert e.value.damaged and "truncated (100 bytes, 500 when saved)" in str(e.value)

    with open(d / ws.STATE_FILE, "wb") as f:
        f.write(b"STATE" * 100)  # same size, other bytes
    saved = ws.Saved(d)
    saved.validate(inputs)
    saved.start_checking()
    with pytest.raises(lq.RestoreError) as e:
        saved.check()
    saved.close()
    assert e.value.damaged and "corrupt" in str(e.value)

    (d / ws.META_FILE).write_text("{not json")
    saved = ws.Saved(d)
    with pytest.raises(ws.Unusable) as e:
        saved.validate(inputs)
    saved.close()
    assert e.value.damaged and "meta.json" in str(e.value)


def test_prune_drops_unused_and_orphaned_states(own_cache, tmp_path):
    live_file = tmp_path / "vmlinuz"
    live_file.write_bytes(b"k")
    live = {"files": [ws._file_id(live_file)]}
    gone = {"files": [[str(tmp_path / "no-such-kernel"), 1, 1]]}
    keep = _fake_state(own_cache, dict(live, n=1))
    old = _fake_state(own_cache, dict(live, n=2))
    orphan = _fake_state(own_cache, gone)
    long_ago = time.time() - 30 * 86400
    os.utime(old / ws.META_FILE, (long_ago, long_ago))
    ws.prune()
    assert keep.exists() and not old.exists() and not orphan.exists()


# ------------------------------------------------------------------ the monitor, real QEMU


@pytest.mark.qemu
def test_qmp_against_a_real_qemu(tmp_path):
    q = lq.Qemu(accel="tcg", debug_exit=False, qmp=True, time_limit=60)
    with q:
        with socket.create_connection(("127.0.0.1", q.port)):
            mon = q.monitor
            assert mon.version.get("major", 0) >= 7
            assert mon.execute("query-status")["status"] in ("running", "prelaunch")
            with pytest.raises(QmpError) as e:
                mon.execute("no-such-command")
            assert "no-such-command" in str(e.value)
            fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
            mon.pass_fd(fd, "f1")  # QEMU holds its own copy now
            os.close(fd)
            mon.execute("closefd", fdname="f1")
            mon.send("stop")
            reply = None
            for _ in range(100):
                reply = mon.pending_reply(0.1)
                if reply is not None:
                    break
            assert reply == {"return": {}}
            assert mon.execute("query-status")["status"] == "paused"


# ------------------------------------------------------------------ the same experiment


def _answers(bundle_dir: Path) -> dict:
    """What the firmware answered the payload, without the clock readings (BIOS ticks and RTC
    time of day, which differ between any two runs, cold or warm) and without how long each
    call took (host time, and the target's own TSC timing)."""
    report = json.loads((bundle_dir / "report.json").read_text())
    clock = lambda s: s["int"] == 0x1A and s["function"] in ("AH=00h", "AH=02h", "AH=04h") \
        or s["id"] == "tick-advance"  # noqa: E731
    timing = ("duration_s", "target_us")
    untimed = lambda s: {k: ([untimed(c) for c in v] if k == "calls" else v)  # noqa: E731
                         for k, v in s.items() if k not in timing}
    steps = [untimed(s) for s in report["steps"] if not clock(s)]
    clocks = [(s["id"], s["status"]) for s in report["steps"] if clock(s)]
    return {"verdict": report["verdict"], "e820": report["e820"], "steps": steps,
            "clock_steps": clocks, "before_after": report["before_after"],
            "drives": [s["result"] for s in report["steps"] if s["int"] == 0x13]}


@pytest.mark.qemu
def test_cold_and_warm_runs_give_the_same_answers(tmp_path, built_payload, lab_image):
    """`kexectest lab run --cold` and `kexectest lab run` of one shape: the same E820 map, the
    same drives, the same result for every step, the same before/after comparison."""
    runs = {}
    for kind, extra in (("cold", ["--cold"]), ("warm", [])):
        out = tmp_path / kind
        p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "run", "--accel", "tcg",
                            "--payload", str(built_payload), "--out", str(out),
                            "--timeout", "20", "--quiet", *extra],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == Exit.COMPLETED, p.stderr
        (run_dir,) = [d for d in out.glob("run-*") if d.is_dir()]
        env = json.loads((run_dir / "environment.json").read_text())
        assert env["lab"]["start"] == kind, env["lab"]
        line = "cold boot: --cold" if kind == "cold" else "warm start: restored pc, 256 MiB"
        assert line in p.stderr, p.stderr
        runs[kind] = _answers(run_dir)
        if kind == "warm":
            assert "-incoming" in env["lab"]["qemu_argv"]
            assert Path(env["lab"]["warm_state"], ws.STATE_FILE).is_file()
            meta = json.loads(Path(env["lab"]["warm_state"], ws.META_FILE).read_text())
            # the state names the SeaBIOS the guest's own DMI table reports
            assert meta["seabios_version"] == \
                runs["cold"]["before_after"]["firmware"]["bios_version"]
        else:
            assert "-incoming" not in env["lab"]["qemu_argv"]
    cold, warm = runs["cold"], runs["warm"]
    assert cold["verdict"] == "completed" and len(cold["steps"]) > 50
    assert len(cold["e820"]) >= 5 and cold["e820"] == warm["e820"]
    assert cold["drives"] and cold["drives"] == warm["drives"]
    assert '"80"' in json.dumps(cold["drives"])  # the lab disk answered
    assert cold["steps"] == warm["steps"]
    assert cold["clock_steps"] == warm["clock_steps"]
    assert cold["before_after"] == warm["before_after"]


# ------------------------------------------------------------------ bad states


@pytest.mark.qemu
@pytest.mark.parametrize("damage", ["corrupt", "truncated", "other-qemu",
                                    "stream-of-another-machine"])
def test_bad_state_is_one_line_and_a_cold_boot(tmp_path, own_cache, saved_state, lab_image,
                                               damage):
    """Each kind of bad state: detected before the guest runs, one line, removed (the next run
    saves a good one), and the machine boots cold from its firmware on."""
    state = _copy_state(saved_state, own_cache)
    data_path = state / ws.STATE_FILE
    if damage == "corrupt":
        with open(data_path, "r+b") as f:  # one bit inside the RAM, as bit rot would
            f.seek(data_path.stat().st_size // 2)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0x10]))
        expect = "state.bin is corrupt (SHA-256"
    elif damage == "truncated":
        with open(data_path, "r+b") as f:
            f.truncate(data_path.stat().st_size // 3)
        expect = "truncated"
    elif damage == "other-qemu":
        meta = json.loads((state / ws.META_FILE).read_text())
        meta["inputs"]["qemu"]["version"] = "QEMU emulator version 6.2.0"
        _rewrite_meta(state, inputs=meta["inputs"])
        expect = "QEMU emulator version 6.2.0, this is QEMU emulator version 7"
    else:
        # a stream QEMU itself must refuse: saved by a newer machine type, metadata consistent
        import hashlib

        data = data_path.read_bytes()
        m = re.search(rb"pc-i440fx-(\d+)\.(\d+)", data[:4096])
        assert m, "no machine type in the stream's header"
        newer = b"pc-i440fx-%d.%s" % (int(m.group(1)) + 1, m.group(2))
        assert len(newer) == len(m.group(0))
        data = data[:m.start()] + newer + data[m.end():]
        data_path.write_bytes(data)
        _rewrite_meta(state, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        expect = "Machine type received is '" + newer.decode()
    q = _machine(lab_image, tmp_path / "qemu")
    start = ws.launch(q)
    with q:
        assert start.kind == "cold", start
        assert expect in start.reason, start.reason
        assert "removed, the next run saves it again" in start.reason
        assert "\n" not in start.reason and "Traceback" not in start.reason
        assert "-incoming" not in q.argv_used and "wait=on" in " ".join(q.argv_used)
        if damage == "corrupt":  # the fallback really boots (the others start it alike)
            assert b"Linux version" in _login_prompt(q, until=b"Linux version")
    assert not state.exists()


@pytest.mark.qemu
def test_full_disk_while_saving_is_a_cold_boot(tmp_path, monkeypatch, lab_image):
    """The cache on a 72 MiB file system: room enough to start saving (64 MiB free is asked for),
    not for the state (~85 MiB for 256 MiB of guest RAM)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=72m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {p.stderr.strip()}")
    try:
        monkeypatch.setenv("KEXECTEST_CACHE", str(mnt))
        lines = []
        q = _machine(lab_image, tmp_path / "qemu")
        start = ws.launch(q, log=lines.append)
        with q:
            assert start.kind == "cold" and "-incoming" not in q.argv_used
            assert start.reason.startswith("no space left in "), start.reason
        assert [x.name for x in (mnt / "states").iterdir() if not x.name.endswith(".lock")] == []
        assert any(ln.startswith("no saved state for this machine shape") for ln in lines)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.qemu
def test_machine_that_cannot_boot_is_not_saved(tmp_path, own_cache, lab_image):
    """A guest that panics before its login prompt (no /init, so Linux looks for a root file
    system and finds none): the builder gives up at the panic, not at its time limit, and the
    run boots cold, where the session sees the panic itself."""
    q = _machine(lab_image, tmp_path / "qemu", append=lab_image.cmdline + " rdinit=/no-such-init")
    t0 = time.monotonic()
    start = ws.launch(q)
    with q:
        assert start.kind == "cold" and "-incoming" not in q.argv_used
        assert "Kernel panic - not syncing" in start.reason, start.reason
        assert time.monotonic() - t0 < ws.BUILD_LIMIT_S / 2
    assert [d for d in (own_cache / "states").iterdir() if not d.name.endswith(".lock")] == []


_FIRST_RUN = """
import json, socket, sys
from pathlib import Path
from kexectest.lab import qemu as lq, warmstate as ws
img = json.loads(sys.argv[1])
q = lq.Qemu(machine="pc", memory_mib=256, accel="tcg", kernel=Path(img["kernel"]),
            initrd=Path(img["initrd"]), append=img["cmdline"], disks=[Path(img["disks"][0])],
            share_host=True, no_reboot=False, time_limit=300)
lines = []
start = ws.launch(q, log=lines.append)
with q:
    buf = b""
    with socket.create_connection(("127.0.0.1", q.port)) as s:
        s.settimeout(120)
        while not buf.endswith(b"login: "):
            buf += s.recv(65536) or sys.exit("console closed")
print(json.dumps({"start": start.environment(), "lines": lines}))
"""


@pytest.mark.qemu
def test_two_concurrent_first_runs_make_one_state(tmp_path, own_cache, lab_image):
    procs = [subprocess.Popen([sys.executable, "-c", _FIRST_RUN, json.dumps(lab_image.to_json())],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    starts = [o["start"] for o in outs]
    assert [s["start"] for s in starts] == ["warm", "warm"], starts
    assert sorted(s["warm_state_saved_now"] for s in starts) == [False, True]
    assert starts[0]["warm_state"] == starts[1]["warm_state"]
    states = [d for d in (own_cache / "states").iterdir() if not d.name.endswith(".lock")]
    assert [d.name for d in states] == [Path(starts[0]["warm_state"]).name]
    said = [ln for o in outs for ln in o["lines"]]
    assert sum(ln.startswith("no saved state for this machine shape") for ln in said) == 1
    assert sum(ln.startswith("another run is saving this machine shape") for ln in said) == 1
