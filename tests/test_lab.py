"""The virtual lab: image builder, QEMU launcher, a real guest over its TCP serial console, and
whole `kexectest lab run`s through a real kexec (QEMU/TCG, SeaBIOS, Debian's kernel)."""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pexpect
import pexpect.fdpexpect
import pytest

from kexectest.errors import Exit, KexectestError
from kexectest.lab import image as li
from kexectest.lab import qemu as lq
from kexectest.lab import warmstate
from kexectest.lab.runner import Shape, guest_command, run_virtual
from kexectest.trace import checksum
from reportschema import assert_valid_report

PROMPT = r"# $"


# ------------------------------------------------------------------ pure units


def test_known_sector_layout():
    s0 = li.known_sector(0, 0)
    s1 = li.known_sector(1, 0)
    assert len(s0) == 512 and s0[510:] == b"\x55\xaa"
    assert s0[0x1B8:0x1BC] == (0x4B545330).to_bytes(4, "little")
    assert s1[0x1B8:0x1BC] == (0x4B545331).to_bytes(4, "little")
    assert s0[:0x1B8] == s1[:0x1B8]  # same code, different signature
    sec = li.known_sector(1, 0x1234)
    text = b"KEXECTEST DISK 1 LBA 00001234"
    assert sec.startswith(text) and len(sec) == 512
    assert set(sec[len(text):]) == {0x34}
    with pytest.raises(ValueError):
        li.known_sector(2, 1)
    with pytest.raises(ValueError):
        li.known_sector(0, li.DISK_SECTORS)


def test_bootsector_message_checksum_matches_trace_format():
    """The boot sector computes its checksum at run time; the text it sums is in the binary."""
    bs = li.bootsector()
    assert b"KT boot via=int19 from=disk\0" in bs


def test_cpio_archive_reads_back_with_cpio(tmp_path):
    c = li.Cpio()
    c.file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
    c.symlink("bin/sh", "/bin/busybox")
    c.chardev("dev/console", 5, 1)
    archive = tmp_path / "a.cpio"
    archive.write_bytes(c.finish())
    out = subprocess.run(["cpio", "-itv", "-F", str(archive)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listing = out.stdout
    assert re.search(r"^crw-------.* 5, +1 .* dev/console$", listing, re.M)
    assert re.search(r"^lrwxrwxrwx.* bin/sh -> /bin/busybox$", listing, re.M)
    assert re.search(r"^-rw-r--r--.* etc/passwd$", listing, re.M)
    assert re.search(r"^drwxr-xr-x.* etc$", listing, re.M)  # parents made on the way


def test_bzimage_version_rejects_non_kernels(tmp_path):
    f = tmp_path / "not-a-kernel"
    f.write_bytes(b"\0" * 4096)
    with pytest.raises(KexectestError) as e:
        li.bzimage_version(f)
    assert e.value.code == Exit.LAB_BUILD


def test_missing_qemu_is_a_missing_tool(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    q = lq.Qemu(accel="tcg")
    with pytest.raises(KexectestError) as e:
        q.argv(1234)
    assert e.value.code == Exit.MISSING_TOOL and "qemu-system-x86" in str(e.value)


def test_accel_auto_follows_cpu_flags():
    with open("/proc/cpuinfo") as f:
        flags = next((ln for ln in f if ln.startswith("flags")), "")
    real = os.path.exists("/dev/kvm") and bool(re.search(r"\b(vmx|svm)\b", flags))
    assert lq.choose_accel("auto") == ("kvm" if real else "tcg")
    assert lq.choose_accel("tcg") == "tcg"


def test_exit_value_decodes_debug_exit():
    assert lq.exit_value(99) == 0x31
    assert lq.exit_value(0) is None and lq.exit_value(-9) is None and lq.exit_value(2) is None


def test_shape_from_name_dict_and_object():
    assert Shape.of("q35", memory=512) == Shape("q35", 512, 1, 1, "auto")
    assert Shape.of({"machine": "pc", "memory_mib": 1024, "smp": 2}).memory == 1024

    class Q:
        machine, memory, smp, disks, accel = "q35", 5120, 4, 2, "tcg"
    assert Shape.of(Q()) == Shape("q35", 5120, 4, 2, "tcg")
    for bad in ({"machine": "isapc"}, {"disks": 3}, {"colour": "red"}):
        with pytest.raises(KexectestError) as e:
            Shape.of(bad)
        assert e.value.code == Exit.CONFIG


def test_guest_command_is_the_hardware_command():
    cmd = guest_command(Path("/work/p.elf"), "kexec-tools",
                        {"hang_at": "e820", "uart_base": 0x2F8, "skip": ()})
    assert cmd.startswith("kexectest load /work/p.elf --via kexec-tools --exec --yes")
    assert "--hang-at e820" in cmd and "--uart-base 0x2f8" in cmd


def test_lab_run_rejects_unknown_options(tmp_path):
    with pytest.raises(KexectestError) as e:
        run_virtual("pc", loader="floppy", out_dir=tmp_path)
    assert e.value.code == Exit.CONFIG
    with pytest.raises(KexectestError) as e:
        run_virtual("pc", out_dir=tmp_path, colour="red")
    assert e.value.code == Exit.CONFIG


def test_cli_lab_run_bad_machine_is_usage_error():
    p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "run", "--machine", "isapc"],
                       capture_output=True, text=True)
    assert p.returncode == Exit.USAGE and "Traceback" not in p.stderr


# ------------------------------------------------------------------ the built image


@pytest.mark.qemu
def test_build_is_cached(lab_image):
    initrd = lab_image.initrd.stat()
    again = li.build_image()
    assert again == lab_image
    st = again.initrd.stat()
    assert (st.st_ino, st.st_mtime_ns) == (initrd.st_ino, initrd.st_mtime_ns)  # not rebuilt
    p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "build"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and p.stdout.strip() == str(lab_image.directory)
    assert "building" not in p.stderr


@pytest.mark.qemu
def test_disk_images_hold_the_known_bytes(lab_image):
    for d, path in enumerate(lab_image.disks):
        assert path.stat().st_size == 16 * 1024 * 1024
        with open(path, "rb") as f:
            for lba in (0, 1, 2, 255, 256, 4097, li.DISK_SECTORS - 1):
                f.seek(lba * 512)
                assert f.read(512) == li.known_sector(d, lba), (d, lba)


@pytest.mark.qemu
def test_initramfs_contents(lab_image):
    listing = subprocess.run(["cpio", "-it"], input=gzip.decompress(lab_image.initrd.read_bytes()),
                             capture_output=True).stdout.decode().split()
    for name in ("init", "bin/busybox", "sbin/kexec", "sbin/getty", "bin/login", "bin/kexectest",
                 "etc/shadow", "dev/console"):
        assert name in listing
    mods = sorted(n for n in listing if n.startswith("lib/kt-modules/"))
    order = [re.sub(r"^lib/kt-modules/\d+-|\.ko$", "", n) for n in mods]
    assert set(order) == set(li.MODULES)
    for before, after in (("virtio_ring", "virtio_pci"), ("virtio", "virtio_pci"),
                          ("9pnet", "9pnet_virtio"), ("netfs", "9p"), ("fscache", "9p"),
                          ("9pnet", "9p")):
        assert order.index(before) < order.index(after)


@pytest.mark.qemu
def test_bad_kernel_path_is_a_build_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "build", "--kernel",
                        str(tmp_path / "nope")], capture_output=True, text=True)
    assert p.returncode == Exit.USAGE or p.returncode == Exit.LAB_BUILD
    assert "Traceback" not in p.stderr


# ------------------------------------------------------------------ QEMU itself


def _connect(q: lq.Qemu, timeout: float = 60) -> tuple[socket.socket, pexpect.fdpexpect.fdspawn]:
    s = socket.create_connection(("127.0.0.1", q.port))
    return s, pexpect.fdpexpect.fdspawn(s.fileno(), timeout=timeout)


@pytest.mark.qemu
def test_bootsector_boots_from_the_bios_and_leaves_through_debug_exit(lab_image, tmp_path):
    """SeaBIOS boots disk 0 (the path a payload's int 19h chain takes)."""
    with lq.Qemu(machine="q35", accel="tcg", disks=lab_image.disks, time_limit=60,
                 out_dir=tmp_path) as q:
        s, c = _connect(q)
        c.expect(rb"KT boot via=int19 from=disk ~([0-9A-F]{4})\r\n")
        assert int(c.match.group(1), 16) == checksum(b"KT boot via=int19 from=disk")
        assert q.wait(30) is not None
        s.close()
    assert q.debug_exit_value == 0x31 and not q.timed_out
    assert (tmp_path / "qemu.stderr").exists() and (tmp_path / "qemu.cmdline").exists()


@pytest.mark.qemu
def test_time_limit_ends_qemu_by_pid(tmp_path):
    with lq.Qemu(accel="tcg", time_limit=1.0, debug_exit=False) as q:  # nothing to boot: idles
        s, _ = _connect(q)
        assert q.wait(30) is not None
        s.close()
    assert q.timed_out
    with pytest.raises(ProcessLookupError):
        os.kill(q.pid, 0)


@pytest.mark.qemu
def test_qemu_that_cannot_start_names_the_stage(tmp_path):
    q = lq.Qemu(accel="tcg", extra=["-no-such-option"], out_dir=tmp_path)
    with pytest.raises(KexectestError) as e:
        q.start()
    assert e.value.code == Exit.LAB_STAGE and "qemu failed to start" in str(e.value)
    assert "no-such-option" in (tmp_path / "qemu.stderr").read_text()


# ------------------------------------------------------------------ the guest


@pytest.fixture(scope="module")
def guest(lab_image, tmp_path_factory):
    """One booted lab guest (restored from its shape's saved state), logged in as root on its
    serial console."""
    out = tmp_path_factory.mktemp("guest")
    q = lq.Qemu(machine="pc", memory_mib=512, accel="tcg", kernel=lab_image.kernel,
                initrd=lab_image.initrd, append=lab_image.cmdline, disks=lab_image.disks[:1],
                share_host=True, time_limit=600, out_dir=out)
    warmstate.launch(q)
    with q:
        s, c = _connect(q, timeout=120)
        c.logfile_read = open(out / "console.log", "wb")
        c.expect(rb"login: ")
        c.sendline(lab_image.login)
        c.expect(rb"[Pp]assword: ")
        c.sendline(lab_image.password)
        c.expect(PROMPT)
        yield c
        s.close()


def _sh(c, command: str, timeout: float = 60) -> tuple[str, int]:
    c.sendline(f"{command}; echo RC=$?")
    c.expect(rb"RC=(\d+)\r\n", timeout=timeout)
    text = c.before.decode(errors="replace")
    rc = int(c.match.group(1))
    c.expect(PROMPT)
    return text, rc


@pytest.mark.qemu
def test_guest_shell_and_kernel(guest, lab_image):
    out, rc = _sh(guest, "id -u; cat /proc/cmdline; uname -r")
    assert rc == 0
    assert re.search(r"^0\r?$", out, re.M)
    assert "console=ttyS0,115200" in out and lab_image.kernel_version in out


@pytest.mark.qemu
def test_guest_runs_the_hosts_kexectest_through_the_chroot(guest):
    from kexectest import __version__

    out, rc = _sh(guest, "kexectest --version", timeout=120)
    assert rc == 0 and f"kexectest, version {__version__}" in out
    out, rc = _sh(guest, "grep ' /host ' /proc/mounts")
    assert rc == 0 and "9p" in out and re.search(r"\bro\b", out)
    # the chroot sees the guest's own kernel, not the host's
    out, rc = _sh(guest, "chroot /host cat /proc/sys/kernel/hostname")
    assert rc == 0 and "kexectest-lab" in out


@pytest.mark.qemu
def test_guest_load_refuses_non_root(guest, built_payload):
    # a copy 'nobody' can read (pytest's tmp is private to root)
    _, rc = _sh(guest, f"cp /host{built_payload} /host/run/kexectest-tmp/p.elf && "
                       "chmod 644 /host/run/kexectest-tmp/p.elf")
    assert rc == 0
    out, rc = _sh(guest, "cd / && chroot /host /usr/bin/env TMPDIR=/run/kexectest-tmp "
                         "/usr/bin/setpriv --reuid 65534 --regid 65534 --clear-groups "
                         f"{sys.executable} -P -m kexectest load /run/kexectest-tmp/p.elf",
                  timeout=120)
    assert rc == Exit.KEXEC_REFUSED, out
    assert re.search(r"root|CAP_SYS_BOOT", out)


@pytest.mark.qemu
def test_guest_load_refuses_kexec_load_disabled(guest, built_payload):
    # irreversible until reboot: keep this the last test on this guest
    _, rc = _sh(guest, "echo 1 > /proc/sys/kernel/kexec_load_disabled")
    assert rc == 0
    out, rc = _sh(guest, f"kexectest load {built_payload}", timeout=120)
    assert rc == Exit.KEXEC_REFUSED, out
    assert "kexec_load_disabled" in out


@pytest.mark.qemu
def test_wrong_password_is_refused(lab_image, tmp_path):
    q = lq.Qemu(accel="tcg", kernel=lab_image.kernel, initrd=lab_image.initrd,
                append=lab_image.cmdline, time_limit=300, out_dir=tmp_path)
    warmstate.launch(q)  # the login, not the boot, is under test
    with q:
        s, c = _connect(q, timeout=120)
        c.expect(rb"login: ")
        c.sendline("root")
        c.expect(rb"[Pp]assword: ")
        c.sendline("not-the-password")
        c.expect(rb"Login incorrect", timeout=60)
        s.close()


# ------------------------------------------------------------------ whole lab runs


def _run(tmp_path, built_payload, lab_image, machine, **kw):
    kw.setdefault("timeout", 20.0)
    result = run_virtual(machine, out_dir=tmp_path, payload=built_payload, image=lab_image,
                         quiet=True, accel="tcg", **kw)
    report = json.loads((result.bundle_dir / "report.json").read_text())
    assert_valid_report(report)
    console = (result.bundle_dir / "console.log").read_text(errors="replace")
    assert (result.bundle_dir / "qemu.stderr").exists()
    return result, report, console


def _ran_to_the_end(result, report, console):
    assert result.verdict in ("completed", "failed-steps"), report["summary"]
    assert report["hang"] is None and report["reset"] is None
    assert "kexec_core: Starting new kernel" in console
    assert re.search(r"KT done steps=\d+", console)


@pytest.mark.qemu
def test_run_syscall_pc_across_the_pci_hole(tmp_path, built_payload, lab_image):
    result, report, console = _run(tmp_path, built_payload, lab_image,
                                   {"machine": "pc", "memory": 3712, "smp": 2, "disks": 2},
                                   loader="syscall")
    _ran_to_the_end(result, report, console)
    assert report["before_after"]["e820"]["same"] is True
    above_4g = [e for e in report["e820"] if e["type"] == 1 and e["base"] >= 1 << 32]
    assert above_4g, report["e820"]
    assert "dl=81" in console  # both lab disks seen by the BIOS after kexec


@pytest.mark.qemu
def test_run_kexec_tools_q35_above_4g(tmp_path, built_payload, lab_image):
    result, report, console = _run(tmp_path, built_payload, lab_image,
                                   {"machine": "q35", "memory": 5000, "smp": 2, "disks": 1},
                                   loader="kexec-tools")
    _ran_to_the_end(result, report, console)
    assert report["before_after"]["e820"]["same"] is True
    usable_high = sum(e["length"] for e in report["e820"]
                      if e["type"] == 1 and e["base"] >= 1 << 32)
    assert usable_high >= (5000 - 2048) * 2**20  # q35 keeps at most 2 GiB below 4 GiB


@pytest.mark.qemu
def test_run_hang_is_located(tmp_path, built_payload, lab_image):
    # the silence clock runs from the command on: it covers the guest's `kexectest load` start
    # too (seconds of Python under TCG, more on a loaded machine)
    result, report, _ = _run(tmp_path, built_payload, lab_image, "pc", loader="syscall",
                             hang_at="e820", timeout=12.0)
    assert result.verdict == "hung" and result.exit_code == Exit.HUNG
    assert report["hang"]["step"] == "e820"


@pytest.mark.qemu
def test_run_reset_is_seen(tmp_path, built_payload, lab_image):
    result, report, _ = _run(tmp_path, built_payload, lab_image, "q35", loader="kexec-tools",
                             reset_at="e820", timeout=30.0)  # the rebooted guest's banner
    assert result.verdict == "reset" and result.exit_code == Exit.RESET  # can take 10 s (TCG)


@pytest.mark.qemu
def test_run_wrong_uart_base_gives_no_output(tmp_path, built_payload, lab_image):
    result, report, console = _run(tmp_path, built_payload, lab_image, "pc", loader="syscall",
                                   uart_base=0x2F8, timeout=12.0)  # see test_run_hang_is_located
    assert result.verdict == "no-output" and result.exit_code == Exit.NO_OUTPUT
    assert "kexec_core: Starting new kernel" in console


@pytest.mark.qemu
def test_run_direct_with_int19_chain(tmp_path, built_payload, lab_image):
    """Under -kernel, SeaBIOS's int 19h boots the -kernel option ROM (bootindex 0) again, not
    disk 0: the payload comes back and says so.  (The disk's boot sector is proven by
    test_bootsector_boots_from_the_bios...)"""
    result, report, console = _run(tmp_path, built_payload, lab_image,
                                   {"machine": "pc", "disks": 1}, loader="direct", int19=True)
    assert result.verdict in ("completed", "failed-steps"), report["summary"]
    done = re.search(r"KT done steps=\d+ errors=\d+ next=int19", console)
    assert done and re.search(r"KT boot via=int19", console[done.end():])


@pytest.mark.qemu
def test_run_reset_direct(tmp_path, built_payload, lab_image):
    result, report, _ = _run(tmp_path, built_payload, lab_image, "pc", loader="direct",
                             reset_at="e820", timeout=30.0)  # the rebooted guest's banner
    assert result.verdict == "reset" and result.exit_code == Exit.RESET  # can take 10 s (TCG)


@pytest.mark.qemu
def test_cli_lab_run_prints_bundle_and_exits_with_verdict(tmp_path, built_payload, lab_image):
    p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "run", "--loader", "direct",
                        "--accel", "tcg", "--payload", str(built_payload), "--out",
                        str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode in (Exit.COMPLETED, Exit.FAILED_STEPS), p.stderr
    m = re.search(r"^bundle: (\S+\.tar\.gz)$", p.stdout, re.M)
    assert m and Path(m.group(1)).is_file()


@pytest.mark.qemu
def test_run_login_failure_is_a_stage_error_with_console_kept(tmp_path, built_payload, lab_image):
    import dataclasses

    with pytest.raises(KexectestError) as e:
        run_virtual("pc", out_dir=tmp_path, payload=built_payload, accel="tcg", quiet=True,
                    timeout=20.0, image=dataclasses.replace(lab_image, password="wrong"))
    assert e.value.code == Exit.LAB_STAGE and "login incorrect" in str(e.value)
    (run_dir,) = [p for p in tmp_path.glob("run-*") if p.is_dir()]
    assert "login:" in (run_dir / "console.log").read_text()
    assert "waiting for connection" in (run_dir / "qemu.stderr").read_text()


@pytest.mark.qemu
def test_run_command_failing_in_the_guest_is_reported(tmp_path, built_payload, lab_image):
    with pytest.raises(KexectestError) as e:
        run_virtual("pc", out_dir=tmp_path, payload=built_payload, image=lab_image, accel="tcg",
                    quiet=True, timeout=20.0, skip=("no-such-step",))
    assert e.value.code == Exit.TARGET_COMMAND and "no-such-step" in str(e.value)


@pytest.mark.qemu
def test_cli_lab_run_from_the_lab_file(tmp_path, built_payload):
    lab = Path(__file__).resolve().parents[1] / "labs" / "virtual.toml"
    p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "run", "--config", str(lab),
                        "pc-direct", "--payload", str(built_payload), "--out", str(tmp_path),
                        "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode in (Exit.COMPLETED, Exit.FAILED_STEPS), p.stderr
    (run_dir,) = [d for d in tmp_path.glob("run-*") if d.is_dir()]
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["lab"]["loader"] == "direct" and env["lab"]["machine"]["memory"] == 512
    p = subprocess.run([sys.executable, "-m", "kexectest", "lab", "run", "--config", str(lab),
                        "no-such-machine"], capture_output=True, text=True)
    assert p.returncode == Exit.CONFIG and "Traceback" not in p.stderr


def test_kernel_package_answer_is_kept_until_apt_changes(tmp_path, monkeypatch):
    """apt-cache is asked once; its answer serves later runs until apt's state changes."""
    if not __import__("shutil").which("apt-cache"):
        pytest.skip("no apt-cache here")
    monkeypatch.setenv("KEXECTEST_CACHE", str(tmp_path / "cache"))
    sources = tmp_path / "sources.list"
    sources.write_text("deb http://deb.debian.org/debian bookworm main\n")
    monkeypatch.setattr(li, "APT_STATE", li.APT_STATE + (str(sources),))
    answer = tmp_path / "cache" / li.APT_ANSWER
    package, version = li.resolve_package()
    assert re.fullmatch(r"linux-image-[0-9][\w.+-]*-amd64", package) and version
    os.utime(answer, ns=(1, 1))  # so a rewrite would show
    assert li.resolve_package() == (package, version)
    assert answer.stat().st_mtime_ns == 1  # answered from the file: apt was not asked
    os.utime(sources, ns=(5, 5))  # apt's sources changed: apt must be asked again
    assert li.resolve_package() == (package, version)
    stored = json.loads(answer.read_text())["apt_state"]
    assert [str(sources), 5, sources.stat().st_size] in stored
