"""The kexec loader: segment rounding, errno and preflight messages (pure units), and the real CLI
refusing as a non-root user. Never calls kexec_load for real: this host is not a test guest."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pexpect
import pytest

from kexectest.target import loader
from kexectest import payload as pl
from kexectest.errors import Exit, KexectestError
from kexectest.target.loader import HostFacts, KexecSegment

SRC = pl.payload_dir() / pl.SOURCE_NAME
PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def elf(tmp_path_factory) -> Path:
    if not SRC.is_file():
        pytest.skip(f"payload source {SRC} is not there yet")
    return pl.build(tmp_path_factory.mktemp("build") / "kexec_test.elf")


def facts(**kw) -> HostFacts:
    base = dict(euid=0, cap_sys_boot=True, load_disabled=False, lockdown="none",
                kexec_in_kernel=True, load_limit_spent=False, efi=False,
                memmap=[{"start": 0, "end": 0x9FBFF, "type": "System RAM"},
                        {"start": 0x9FC00, "end": 0xFFFFF, "type": "Reserved"},
                        {"start": 0x100000, "end": 0x7FFFFFF, "type": "System RAM"}])
    base.update(kw)
    return HostFacts(**base)


# --- segment rounding --------------------------------------------------------------------------


def test_aligned_segment_is_unchanged():
    s = loader.align_segment(0x20000, b"\x90" * 0x1234, 0x3000)
    assert (s.mem, s.memsz, s.buf) == (0x20000, 0x3000, b"\x90" * 0x1234)


def test_unaligned_segment_is_rounded_and_padded():
    s = loader.align_segment(0x20010, b"abc", 0x2000)
    assert s.mem == 0x20000
    assert s.memsz == 0x3000  # 0x20010 + 0x2000 = 0x22010 -> 0x23000
    assert s.buf == bytes(0x10) + b"abc"
    assert len(s.buf) <= s.memsz and s.mem % 4096 == 0 and s.memsz % 4096 == 0


def test_filesz_without_bss_rounds_up():
    s = loader.align_segment(0x21000, b"x" * 5, 5)
    assert (s.mem, s.memsz) == (0x21000, 0x1000)


def test_parts_sharing_a_page_are_merged():
    segs = loader.plan_segments([(0x20000, b"A" * 0x100, 0x100), (0x20800, b"B" * 0x10, 0x900)])
    assert len(segs) == 1
    s = segs[0]
    assert (s.mem, s.memsz) == (0x20000, 0x2000)
    assert s.buf[:0x100] == b"A" * 0x100 and s.buf[0x100:0x800] == bytes(0x700)
    assert s.buf[0x800:0x810] == b"B" * 0x10


def test_separate_pages_stay_separate_and_sorted():
    segs = loader.plan_segments([(0x30000, b"B", 1), (0x20000, b"A", 1), (0x40000, b"", 0)])
    assert [(s.mem, s.memsz) for s in segs] == [(0x20000, 0x1000), (0x30000, 0x1000)]


def test_image_segments_match_the_elf(elf):
    img = pl.PayloadImage.open(elf)
    segs = loader.image_segments(img)
    assert segs
    for s in segs:
        assert s.mem % 4096 == 0 and s.memsz % 4096 == 0 and len(s.buf) <= s.memsz
    for es in img.segments:
        seg = next(s for s in segs if s.mem <= es.paddr < s.end)
        rel = es.paddr - seg.mem
        assert seg.buf[rel:rel + es.filesz] == img.data[es.offset:es.offset + es.filesz]
        assert es.paddr + es.memsz <= seg.end


def test_entry_by_kernel_architecture(elf):
    img = pl.PayloadImage.open(elf)
    assert loader.entry_for(img, "x86_64") == img.entry64
    assert loader.entry_for(img, "i686") == img.entry32 == img.e_entry
    with pytest.raises(KexectestError) as exc:
        loader.entry_for(img, "aarch64")
    assert exc.value.code == Exit.KEXEC_REFUSED


def test_kexec_segment_struct_matches_the_abi():
    ptr = ctypes.sizeof(ctypes.c_void_p)
    assert ctypes.sizeof(loader._Segment) == 4 * ptr  # 32 bytes on x86_64, 16 on i386


# --- errno messages ----------------------------------------------------------------------------


@pytest.mark.parametrize("err, text", [
    (errno.ENOSYS, "no kexec_load"),
    (errno.EBUSY, "EBUSY"),
    (errno.EINVAL, "EINVAL"),
    (errno.EADDRNOTAVAIL, "not page-aligned"),
    (errno.ENOMEM, "ENOMEM"),
    (errno.E2BIG, "errno 7"),
])
def test_errno_messages(err, text):
    msg = loader.explain_errno(err, facts())
    assert text in msg and "\n" not in msg


@pytest.mark.parametrize("kw, reason", [
    (dict(cap_sys_boot=False, euid=1000), "no CAP_SYS_BOOT"),
    (dict(load_disabled=True), "kexec_load_disabled is 1"),
    (dict(lockdown="integrity"), "lockdown=integrity"),
    (dict(lockdown="confidentiality"), "lockdown=confidentiality"),
    (dict(load_limit_spent=True), "kexec_load_limit_reboot"),
])
def test_eperm_names_the_reason(kw, reason):
    msg = loader.explain_errno(errno.EPERM, facts(**kw))
    assert msg.startswith("kexec_load: operation not permitted") and reason in msg

def test_eperm_without_a_known_reason_lists_the_candidates():
    for f in (None, facts()):
        msg = loader.explain_errno(errno.EPERM, f)
        assert "CAP_SYS_BOOT, kexec_load_disabled, lockdown or" in msg


# --- preflight ---------------------------------------------------------------------------------

GOOD = [KexecSegment(0x20000, 0x10000, b"")]


def errors(found):
    return [m for lvl, m in found if lvl == "error"]


def test_preflight_clean():
    assert loader.preflight(facts(), GOOD, "syscall") == []


@pytest.mark.parametrize("kw, text", [
    (dict(euid=1000, cap_sys_boot=False), "not root"),
    (dict(euid=0, cap_sys_boot=False), "without CAP_SYS_BOOT"),
    (dict(load_disabled=True), "kexec_load_disabled is 1"),
    (dict(lockdown="integrity"), "lockdown is 'integrity'"),
    (dict(kexec_in_kernel=False), "no kexec support"),
    (dict(load_limit_spent=True), "kexec_load_limit_reboot"),
])
def test_preflight_refusals(kw, text):
    errs = errors(loader.preflight(facts(**kw), GOOD, "syscall"))
    assert len(errs) == 1 and text in errs[0]


def test_preflight_efi_is_a_warning_only():
    found = loader.preflight(facts(efi=True), GOOD, "syscall")
    assert found and all(lvl == "warning" for lvl, _ in found)
    assert "UEFI" in found[0][1]


def test_preflight_memory_ranges():
    reserved = [KexecSegment(0x9F000, 0x2000, b"")]
    assert "overlaps Reserved memory" in errors(loader.preflight(facts(), reserved, "syscall"))[0]
    outside = [KexecSegment(0x10000000, 0x1000, b"")]
    assert "not inside System RAM" in errors(loader.preflight(facts(), outside, "syscall"))[0]
    many = [KexecSegment(0x20000 + i * 0x1000, 0x1000, b"") for i in range(17)]
    assert any("at most 16" in m for m in errors(loader.preflight(facts(), many, "syscall")))
    assert loader.preflight(facts(memmap=[]), GOOD, "syscall")[0][0] == "warning"


def test_preflight_needs_kexec_tools_for_that_path(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    errs = errors(loader.preflight(facts(), None, "kexec-tools"))
    assert len(errs) == 1 and "kexec-tools not installed" in errs[0]


def test_read_facts_on_this_host():
    f = loader.read_facts()
    assert f.euid == os.geteuid()
    status = Path("/proc/self/status").read_text()
    cap = int(next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16)
    assert f.cap_sys_boot == bool(cap >> 22 & 1)


# --- the real command, refused before anything is loaded ------------------------------------------


def as_nobody(*args) -> subprocess.CompletedProcess:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop to nobody")
    cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
           PY, "-m", "kexectest", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/",
                          env={**os.environ, "HOME": "/", "PYTHONPATH": str(ROOT)})


@pytest.fixture
def shared_elf(elf):
    """A copy nobody can read (pytest's tmp dirs are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="kt-loader-"))
    d.chmod(0o755)
    dst = d / "kexec_test.elf"
    shutil.copyfile(elf, dst)
    dst.chmod(0o644)
    yield dst
    shutil.rmtree(d)


@pytest.mark.parametrize("via", ["syscall", "kexec-tools"])
def test_load_as_nobody_is_refused(shared_elf, via):
    proc = as_nobody("load", shared_elf, "--via", via, "--hang-at", "1")
    assert proc.returncode == Exit.KEXEC_REFUSED, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("kexectest: error:")]
    assert err == ["kexectest: error: not root (euid 65534): kexec needs CAP_SYS_BOOT; "
                   "run as root"]
    # the before-snapshot went out first, complete
    assert proc.stdout.startswith("KTSNAP begin v=1")
    assert "KTSNAP end " in proc.stdout and "loaded" not in proc.stdout


def test_exec_on_a_terminal_needs_yes(elf):
    child = pexpect.spawn(PY, ["-m", "kexectest", "load", str(elf), "--exec"], timeout=60,
                          encoding="utf-8")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == Exit.USAGE
    assert "add --yes" in child.before and "KTSNAP" not in child.before


# --- kexec_file_load (--via file) --------------------------------------------------------------


@pytest.mark.parametrize("kw, text", [
    (dict(lockdown="integrity"), "kexec_file_load takes only a bzImage signed"),
    (dict(sig_enforce=True), "CONFIG_KEXEC_SIG_FORCE=y"),
    (dict(kexec_file=False), "without CONFIG_KEXEC_FILE"),
])
def test_preflight_file_refusals_one_line_each(kw, text, monkeypatch):
    monkeypatch.setattr(loader, "kernel_machine", lambda: "x86_64")
    errs = errors(loader.preflight(facts(**kw), None, "file"))
    assert len(errs) == 1 and text in errs[0] and "\n" not in errs[0]
    assert errors(loader.preflight(facts(), None, "file")) == []


def test_preflight_file_needs_x86_64(monkeypatch):
    monkeypatch.setattr(loader, "kernel_machine", lambda: "i686")
    errs = errors(loader.preflight(facts(), None, "file"))
    assert len(errs) == 1 and "needs an x86_64 kernel" in errs[0] and "i686" in errs[0]


def test_file_errnos_explained():
    import errno

    assert "CONFIG_KEXEC_FILE" in loader.explain_file_errno(errno.ENOSYS)
    assert "lockdown=integrity" in loader.explain_file_errno(errno.EPERM,
                                                              facts(lockdown="integrity"))
    assert "signature" in loader.explain_file_errno(errno.EKEYREJECTED)
    assert "header" in loader.explain_file_errno(errno.ENOEXEC)


def test_kernel_config_read_where_the_kernel_shows_it(tmp_path, monkeypatch):
    import gzip

    cfg = tmp_path / "config.gz"
    cfg.write_bytes(gzip.compress(b"# c\nCONFIG_KEXEC_FILE=y\n# CONFIG_KEXEC_SIG_FORCE is not set\n"))
    monkeypatch.setattr(loader, "KERNEL_CONFIGS", (str(tmp_path / "none"), str(cfg)))
    got = loader.kernel_config()
    assert got == {"CONFIG_KEXEC_FILE": "y"}
    monkeypatch.setattr(loader, "KERNEL_CONFIGS", (str(tmp_path / "none"),))
    assert loader.kernel_config() == {}


def test_load_via_file_dry_run_refuses_cmdline_without_file(elf):
    proc = subprocess.run([sys.executable, "-m", "kexectest", "load", str(elf), "--via",
                           "syscall", "--cmdline", "x", "--dry-run", "--no-snapshot"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "go with a bzImage: --via file" in proc.stderr


def test_real_mode_goes_with_the_kexec_tools_bzimage_loader(elf):
    proc = subprocess.run([sys.executable, "-m", "kexectest", "load", str(elf), "--via",
                           "file", "--real-mode", "--dry-run", "--no-snapshot"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--via kexec-tools-bzimage" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_kexec_tools_bzimage_needs_kexec_tools(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    errs = errors(loader.preflight(facts(), None, "kexec-tools-bzimage"))
    assert len(errs) == 1 and "kexec-tools not installed" in errs[0]
