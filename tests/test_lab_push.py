"""The push on the real virtual lab (QEMU/TCG, SeaBIOS, the lab's Debian kernel): what a user's
`kexectest run --push` does on hardware, end to end -- the Python agent into a guest with a
Python (both loaders, pc and q35), the shell agent into the lab's own guest, which has no
Python at all and no host share -- and both agents' snapshots and load plans compared on one
guest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kexectest.capture import push
from kexectest.capture.capture import Capture
from kexectest.capture.transport import SerialSettings, open_port
from kexectest.capture.triggers import ConsoleSpawn, login
from kexectest.lab import guest_python, warmstate
from kexectest.lab import image as li
from kexectest.lab import qemu as lq
from kexectest.lab.runner import run_virtual
from kexectest.analysis.before_after import e820_type
from kexectest.target import pack
from kexectest.target.snapshot import parse_snapshot

pytestmark = pytest.mark.qemu


def _run(tmp_path, built_payload, lab_image, machine, **kw):
    kw.setdefault("timeout", 20.0)
    result = run_virtual(machine, out_dir=tmp_path, payload=built_payload, image=lab_image,
                         quiet=True, accel="tcg", **kw)
    env = json.loads((result.bundle_dir / "environment.json").read_text())
    console = (result.bundle_dir / "console.log").read_text(errors="replace")
    return result, env, console


def _no_host_tree(env):
    argv = " ".join(env["lab"]["qemu_argv"])
    assert "virtfs" not in argv and "9p" not in argv, argv


@pytest.mark.parametrize("machine", ["pc", "q35"])
@pytest.mark.parametrize("loader", ["syscall", "kexec-tools"])
def test_pushed_python_agent(tmp_path, built_payload, lab_image, machine, loader):
    result, env, console = _run(tmp_path, built_payload, lab_image, machine, loader=loader,
                                agent="python")
    assert result.verdict in ("completed", "failed-steps"), result.analysis.one_line()
    assert env["target_agent"] == "pushed" and env["lab"]["agent"] == "python"
    assert env["push"]["files"] == {pack.AGENT_NAME: len(pack.agent_source().encode()),
                                    pack.PAYLOAD_NAME: built_payload.stat().st_size}
    assert re.search(rf"KTLOAD exec entry=0x[0-9a-f]+ via={loader}", console)
    assert "kexec_core: Starting new kernel" in console and "KT done steps=" in console
    assert "KTSNAP end lines=" in console
    _no_host_tree(env)


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_pushed_shell_agent_in_a_guest_without_python(tmp_path, built_payload, lab_image,
                                                      machine):
    """The lab's own guest: busybox and kexec-tools, no Python anywhere, no host share."""
    result, env, console = _run(tmp_path, built_payload, lab_image, machine,
                                loader="kexec-tools")  # agent "auto": the shell agent
    assert result.verdict in ("completed", "failed-steps"), result.analysis.one_line()
    assert env["target_agent"] == "shell" and env["lab"]["agent"] == "shell"
    assert re.search(r"KTPUSH tools uid=0 python= pyver= kexec=/sbin/kexec ", console)
    assert "KTLOAD exec entry=0x" in console and "via=kexec-tools" in console
    assert "kexec_core: Starting new kernel" in console and "KT done steps=" in console
    assert result.analysis.to_dict()["before_after"]["e820"]["same"] is True
    _no_host_tree(env)


def _console_pusher(q: lq.Qemu, image, run_dir: Path):
    port = open_port(SerialSettings(q.serial_url))
    cap = Capture(run_dir)
    spawn = ConsoleSpawn(port, cap)
    login(spawn, user=image.login, password=image.password, prompt=li.PROMPT_RE, timeout=180)
    return spawn, port, cap


def _ask(spawn, command: str, timeout: float = 120.0) -> list[str]:
    """A command's output lines on the guest's console, up to the marker it ends with."""
    spawn.sendline(f"{command}; echo KT-DONE-$?")
    spawn.expect(rb"KT-DONE-(\d+)", timeout=timeout)
    text = spawn.before.decode("utf-8", "replace").replace("\r", "")
    out = []
    for ln in text.split("\n"):  # the first comes after the shell's prompt
        m = re.search(r"KTSNAP |dry run: |kexectest: ", ln)
        if m:
            out.append(ln[m.start():])
    return out


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_both_agents_agree_in_one_guest(tmp_path, built_payload, lab_image, machine):
    """On one guest with a Python: the two agents' snapshots line for line (but the source of
    the kernel log: busybox's dd cannot read /dev/kmsg without blocking), and their dry runs
    through kexec-tools to the same line."""
    img = guest_python.python_image(lab_image)
    q = lq.Qemu(machine=machine, memory_mib=256, accel="tcg", kernel=img.kernel,
                initrd=img.initrd, append=img.cmdline, disks=img.disks[:1], time_limit=400,
                out_dir=tmp_path / "qemu")
    warmstate.launch(q)
    with q:
        spawn, port, cap = _console_pusher(q, img, tmp_path / "run")
        try:
            pusher = push.ConsolePush(spawn)
            tools = pusher.probe(push.need_kib(push.largest_files(built_payload)))
            assert tools.python and tools.kexec
            py_plan, _ = push.plan_push(tools, built_payload, {}, via="kexec-tools",
                                        agent="python")
            sh_plan, _ = push.plan_push(tools, built_payload, {}, via="kexec-tools",
                                        agent="shell")
            pusher.start_receiver(tools)
            pusher.push([*py_plan.files, sh_plan.files[0]])  # the payload once: unpatched both
            d = tools.directory
            py_snap = _ask(spawn, f"python3 {d}/{pack.AGENT_NAME} snapshot")
            sh_snap = _ask(spawn, f"sh {d}/{pack.SHELL_AGENT_NAME} snapshot")
            py_dry = _ask(spawn, f"python3 {d}/{pack.AGENT_NAME} load {d}/{pack.PAYLOAD_NAME} "
                                 "--via kexec-tools --dry-run --no-snapshot")
            sh_dry = _ask(spawn, f"sh {d}/{pack.SHELL_AGENT_NAME} load {d}/{pack.PAYLOAD_NAME} "
                                 "--dry-run --no-snapshot")
        finally:
            cap.close()
            port.close()
    assert py_snap[0].startswith("KTSNAP begin v=1 ") and py_snap[-1].startswith("KTSNAP end ")
    assert any(ln.startswith("KTSNAP edd dev=80 ") for ln in py_snap)  # a real BIOS's drive
    source = [ln for ln in sh_snap if ln.startswith("KTSNAP e820-source ")]
    assert source and source[0].startswith("KTSNAP e820-source kind=dmesg ")
    assert [ln for ln in sh_snap if not ln.startswith("KTSNAP e820-source ")] == \
        [ln for ln in py_snap if not ln.startswith("KTSNAP e820-source ")]
    assert py_dry == sh_dry and len(py_dry) == 1
    assert py_dry[0].startswith("dry run: would load 1 segment(s), entry 0x")


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_load_via_kexec_file_load(tmp_path, built_payload, lab_image, machine):
    """The door distributions take: the pushed agent makes the bzImage from the patched ELF,
    the lab kernel's own kexec_file_load loads it, its purgatory enters the 64-bit entry."""
    result, env, console = _run(tmp_path, built_payload, lab_image, machine, loader="file")
    assert result.verdict in ("completed", "failed-steps"), result.analysis.one_line()
    assert env["target_agent"] == "pushed" and env["lab"]["agent"] == "python"
    assert re.search(r"loaded a \d+-byte bzImage, entry 0x[0-9a-f]+ after its copy, via file",
                     console)
    assert re.search(r"KTLOAD exec entry=0x[0-9a-f]+ via=file", console)
    assert "kexec_core: Starting new kernel" in console and "KT done steps=" in console
    report = result.analysis.to_dict()
    assert report["payload"]["entry"] == "64" and report["payload"]["via"] == "bzimage"
    # the page the kernel filled, against the guest's own /sys/firmware/memmap (the "before"
    # snapshot) and the BIOS's E820 after kexec
    hp = report["handoff_params"]
    assert hp["readable"] and not hp["problems"], hp["problems"]
    assert hp["type_of_loader"] >> 4 == 0xD and hp["address"] == report["state"]["regs"]["esi"]
    snap = parse_snapshot(console.splitlines())
    memmap = [(m["start"], m["end"], e820_type(m["type"])) for m in snap["memmap"]]
    page = [(e["base"], e["base"] + e["length"] - 1, e["type"]) for e in hp["e820"]]
    firmware = [(e["base"], e["base"] + e["length"] - 1, e["type"]) for e in report["e820"]]
    assert sorted(memmap) == sorted(firmware)  # what Linux saw at boot is what the BIOS says
    kernel_only = set(page) - set(memmap)
    e820_diffs = [x for x in hp["differences"] if x["field"] == "e820"]
    assert bool(kernel_only or set(memmap) - set(page)) == bool(e820_diffs), e820_diffs
    assert all(x["class"] in ("expected", "wrong") for x in hp["differences"])
    assert any(c["type_name"] == "RNG_SEED" for c in hp["setup_data"])  # the kernel's own seed
    assert hp["cmdline"] in ("", None)  # an empty command line unless given
    rows = {r["field"]: r for r in hp["fields"]}
    assert rows["e820"]["same"] is (not e820_diffs) and rows["edd drive 80"]["same"] is True
    summary = (result.bundle_dir / "summary.md").read_text()
    assert "### Hand-off vs firmware" in summary and "| e820 |" in summary


@pytest.mark.parametrize("machine", ["pc", "q35"])
@pytest.mark.parametrize("loader,entry,via,door", [
    ("kexec-tools-bzimage", "32", "bzimage", "32-bit"),
    ("real-mode", "16", "setup", "real-mode"),
])
def test_kexec_tools_bzimage_doors(tmp_path, built_payload, lab_image, machine, loader, entry,
                                   via, door):
    """kexec-tools' own bzImage loader (its purgatory, its boot_params page from
    /sys/firmware/memmap), entering the 32-bit door or, with --real-mode, the setup code."""
    result, env, console = _run(tmp_path, built_payload, lab_image, machine, loader=loader)
    assert result.verdict in ("completed", "failed-steps"), result.analysis.one_line()
    assert env["lab"]["loader"] == loader and env["target_agent"] == "pushed"
    assert re.search(r"KTLOAD exec entry=0x[0-9a-f]+ via=kexec-tools-bzimage", console)
    assert ("(real mode)" in console) is (loader == "real-mode")
    report = result.analysis.to_dict()
    assert report["payload"]["entry"] == entry and report["payload"]["via"] == via
    hp = report["handoff_params"]
    assert hp["door"] == door and hp["readable"] and not hp["problems"], hp
    assert hp["type_of_loader"] >> 4 == 0xD
    snap = parse_snapshot(console.splitlines())
    memmap = {(m["start"], m["end"], e820_type(m["type"])) for m in snap["memmap"]}
    page = {(e["base"], e["base"] + e["length"] - 1, e["type"]) for e in hp["e820"]}
    if door == "real-mode":  # kexec-tools leaves the page to the setup code
        assert not page and all(x["class"] == "expected" for x in hp["differences"])
    else:  # its map comes from /sys/firmware/memmap: every range it changed is listed
        changed = (page - memmap) | (memmap - page)
        e820_diffs = [x for x in hp["differences"] if x["field"] == "e820"]
        assert bool(changed) == bool(e820_diffs), (sorted(changed), e820_diffs)
