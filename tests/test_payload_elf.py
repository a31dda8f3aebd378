"""The payload ELF on the host: `kexectest build` / `inspect`, config patching, checks, and one-line
errors for bad input. Runs against the real payload built from payloads/ with binutils."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kexectest import payload as pl
from kexectest.errors import VERDICT_EXIT, Exit, KexectestError
from kexectest.payload.options import CONFIG_OPTION_NAMES

SRC = pl.payload_dir() / pl.SOURCE_NAME


def run_cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "kexectest", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120, **kw)


def assert_one_line_error(proc, code):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kexectest: error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="session")
def elf(tmp_path_factory) -> Path:
    if not SRC.is_file():
        pytest.skip(f"payload source {SRC} is not there yet")
    out = tmp_path_factory.mktemp("build") / "kexec_test.elf"
    proc = run_cli("build", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and "build-id" in proc.stdout
    return out


@pytest.fixture(scope="session")
def img(elf) -> pl.PayloadImage:
    return pl.PayloadImage.open(elf)


# --- build and inspect -----------------------------------------------------------------------


def test_build_output_names_the_build_id(elf, img):
    assert img.build_id and len(img.build_id) == 40
    proc = run_cli("build", "-o", elf)  # rebuilding the same sources gives the same ELF
    assert proc.returncode == 0
    assert img.build_id in proc.stdout
    assert pl.PayloadImage.open(elf).build_id == img.build_id


def test_inspect_json(elf, img):
    proc = run_cli("inspect", elf, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["entry32"] == img.e_entry and isinstance(doc["entry32"], int)
    assert isinstance(doc["entry64"], int)
    assert doc["build_id"] == img.build_id
    assert doc["segments"] and all(isinstance(s["paddr"], int) for s in doc["segments"])
    assert doc["segments"][0]["paddr"] == pl.KT_BASE_DEFAULT
    assert doc["config"]["magic"] == "KTCF" and doc["config"]["uart_base"] == 0x3F8
    assert [s["name"] for s in doc["steps"]][0] == "state"
    assert len({s["name"] for s in doc["steps"]}) == len(doc["steps"])  # ids are unique
    assert not [c for c in doc["checks"] if c["level"] == "error"]
    assert doc["sha256"] == img.sha256


def test_inspect_text(elf, img):
    proc = run_cli("inspect", elf, env={**os.environ, "COLUMNS": "160"})
    assert proc.returncode == 0, proc.stderr
    for text in (img.build_id, "load segments", "config block", "KTCF", img.steps[-1].name):
        assert text in proc.stdout


def test_symbols_agree_with_elf(elf, img):
    with open(elf, "rb") as f:
        e = ELFFile(f)
        syms = {s.name: s["st_value"] for s in e.get_section_by_name(".symtab").iter_symbols()}
    assert img.entry32 == syms["kt_entry32"] == e["e_entry"]
    assert img.entry64 == syms["kt_entry64"]
    n = (syms["kt_steps_end"] - syms["kt_steps"]) // syms["KT_STEP_SIZE"]
    assert len(img.steps) == n > 0
    assert img.version and img.version[0].isdigit()


# --- config patching ---------------------------------------------------------------------------


def raw_config(path: Path) -> bytes:
    """The 64 config bytes found independently of PayloadImage: symbol -> section -> file."""
    with open(path, "rb") as f:
        e = ELFFile(f)
        sym = next(s for s in e.get_section_by_name(".symtab").iter_symbols()
                   if s.name == "kt_config")
        sec = e.get_section(sym["st_shndx"])
        off = sec["sh_offset"] + sym["st_value"] - sec["sh_addr"]
        f.seek(off)
        return f.read(64)


def test_patch_round_trips_every_field(elf, img, tmp_path):
    steps = img.steps
    assert len(steps) >= 4
    out = pl.patch(elf, tmp_path / "p.elf", uart_base=0x2F8, baud=9600,
                   skip=(steps[1].name, "3"), hang_at=steps[2].name, reset_at=str(len(steps) - 1),
                   int19=True, vga_mirror=True, e9_mirror=True, debug_exit=0x501, mask_nmi=True,
                   max_drives=2, keep_uart=True)
    cfg = pl.PayloadImage.open(out).config
    assert (cfg.uart_base, cfg.uart_divisor, cfg.baud) == (0x2F8, 12, 9600)
    assert cfg.skip == img.config.skip | {1, 3}
    assert (cfg.hang_step, cfg.reset_step) == (2, len(steps) - 1)
    assert cfg.flags == img.config.flags | 0x3F
    assert cfg.debug_exit_port == 0x501 and cfg.max_drives == 2
    # the same values straight from the bytes pyelftools locates
    raw = raw_config(out)
    magic, ver, size, uart, div, flags, hang, reset, port, m1, m2, skip, drives, _ = \
        struct.unpack("<4sHHHHIHHHBB32sH6s", raw)
    assert (magic, ver, size, uart, div, hang, reset, port, drives) == \
        (b"KTCF", 1, 64, 0x2F8, 12, 2, len(steps) - 1, 0x501, 2)
    assert flags & 0x3F == 0x3F
    assert int.from_bytes(skip, "little") & 0b1010 == 0b1010
    assert (m1, m2) == (img.config.pic_mask_master, img.config.pic_mask_slave)
    # nothing but the config block changed
    a, b = elf.read_bytes(), out.read_bytes()
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    assert diff and min(diff) >= img.config_offset and max(diff) < img.config_offset + 64
    # and back off again
    back = pl.patch(out, tmp_path / "q.elf", int19=False, vga_mirror=False, e9_mirror=False,
                    debug_exit=False, mask_nmi=False, keep_uart=False, baud=115200)
    cfg2 = pl.PayloadImage.open(back).config
    assert cfg2.flags & 0x3F == 0 and cfg2.uart_divisor == 1


def test_patch_leaves_unset_fields(elf, img, tmp_path):
    out = pl.patch(elf, tmp_path / "same.elf")
    assert out.read_bytes() == elf.read_bytes()


def test_config_options_reach_the_patch(elf, tmp_path):
    """The shared click options map onto patch() arguments (as load / lab run use them)."""
    import click
    from click.testing import CliRunner

    from kexectest.commands.payload import config_options
    from kexectest.payload.options import config_argv, config_kwargs

    seen = {}

    @click.command()
    @config_options
    def cmd(**options):
        seen.update(config_kwargs(options))

    argv = ["--uart-base", "0x2e8", "--baud", "38400", "--skip", "e820", "--skip", "1",
            "--hang-at", "2", "--int19", "--no-vga-mirror", "--debug-exit-port", "0xf4",
            "--max-drives", "1"]
    res = CliRunner().invoke(cmd, argv)
    assert res.exit_code == 0, res.output
    assert seen["uart_base"] == 0x2E8 and seen["baud"] == 38400
    assert seen["skip"] == ("e820", "1") and seen["hang_at"] == "2"
    assert seen["int19"] is True and seen["vga_mirror"] is False and seen["debug_exit"] == 0xF4
    assert seen["e9_mirror"] is None and seen["max_drives"] == 1
    seen2 = {}

    @click.command()
    @config_options
    def cmd2(**options):
        seen2.update(config_kwargs(options))

    assert CliRunner().invoke(cmd2, config_argv(seen)).exit_code == 0
    assert seen2 == seen


def test_unknown_step_is_exit_13_one_line(elf):
    proc = run_cli("load", elf, "--hang-at", "no-such-step", "--no-snapshot")
    line = assert_one_line_error(proc, Exit.UNKNOWN_STEP)
    assert "unknown step 'no-such-step'" in line and "known: state" in line
    proc = run_cli("load", elf, "--skip", "9999", "--no-snapshot")
    assert_one_line_error(proc, Exit.UNKNOWN_STEP)


def test_step_index_by_name_and_number(img):
    last = img.steps[-1]
    assert img.step_index(last.name) == last.index
    assert img.step_index(f"{last.index:03d}") == last.index
    with pytest.raises(KexectestError) as exc:
        img.step_index(len(img.steps))
    assert exc.value.code == Exit.UNKNOWN_STEP


def test_bad_baud_is_one_line(elf):
    proc = run_cli("load", elf, "--baud", "1000", "--no-snapshot")
    assert "does not divide 115200" in assert_one_line_error(proc, Exit.BAD_INPUT)


# --- bad ELF input -------------------------------------------------------------------------------


def bad_inputs(elf: Path, tmp: Path) -> dict[str, Path]:
    data = elf.read_bytes()
    files = {
        "truncated-header": data[:40],
        "truncated-phdrs": data[:60],
        "truncated-body": data[:len(data) // 3],
        "random": os.urandom(4096),
        "elf-magic-random": b"\x7fELF" + os.urandom(4092),
        "empty": b"",
        "text": b"hello world\n",
    }
    out = {}
    for name, blob in files.items():
        (tmp / name).write_bytes(blob)
        out[name] = tmp / name
    out["x86_64-elf"] = Path("/bin/ls")
    out["missing"] = tmp / "does-not-exist.elf"
    out["directory"] = tmp
    return out


def test_corrupt_or_foreign_elf_is_exit_10(elf, tmp_path):
    for name, path in bad_inputs(elf, tmp_path).items():
        for args in (["inspect", path], ["inspect", "--json", path]):
            proc = run_cli(*args)
            line = assert_one_line_error(proc, Exit.BAD_INPUT)
            assert str(path) in line, (name, line)
    line = assert_one_line_error(run_cli("inspect", "/bin/ls"), Exit.BAD_INPUT)
    assert "ELF64" in line and "EM_X86_64" in line


def test_not_a_kexectest_payload(tmp_path):
    src = tmp_path / "plain.S"
    src.write_text(".code32\n.globl _start\n_start: hlt\n")
    subprocess.run(["as", "--32", "-o", tmp_path / "plain.o", src], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0x20000", "-o", tmp_path / "plain.elf",
                    tmp_path / "plain.o"], check=True)
    line = assert_one_line_error(run_cli("inspect", tmp_path / "plain.elf"), Exit.BAD_INPUT)
    assert "not a kexectest payload" in line


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_elf_never_tracebacks(elf, data):
    """Any damage to the headers or the image gives a payload or one KexectestError."""
    blob = bytearray(elf.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.one_of(st.integers(0, 0x200), st.integers(0, len(blob) - 1)))
        blob[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(blob))))
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"kt-mut-{os.getpid()}.elf"
    path.write_bytes(bytes(blob[:cut]))
    try:
        img = pl.PayloadImage.open(path)
        img.checks()
        img.to_dict()
    except KexectestError as exc:
        assert exc.code == Exit.BAD_INPUT and "\n" not in str(exc)
    finally:
        path.unlink()


# --- checks ------------------------------------------------------------------------------------


def with_phdr(elf: Path, dst: Path, paddr: int | None = None, memsz: int | None = None) -> Path:
    """A copy whose first load segment claims another physical address or memory size."""
    data = bytearray(elf.read_bytes())
    phoff, = struct.unpack_from("<I", data, 28)
    phentsize, phnum = struct.unpack_from("<HH", data, 42)
    for i in range(phnum):
        base = phoff + i * phentsize
        if struct.unpack_from("<I", data, base)[0] == 1:  # PT_LOAD
            if paddr is not None:
                struct.pack_into("<I", data, base + 12, paddr)
            if memsz is not None:
                struct.pack_into("<I", data, base + 20, memsz)
            break
    dst.write_bytes(bytes(data))
    return dst


def with_paddr(elf: Path, dst: Path, paddr: int) -> Path:
    return with_phdr(elf, dst, paddr=paddr)


@pytest.mark.parametrize("paddr, expect", [
    (0x100, "IVT"), (0x1800, "boot notes"), (0x9800, "purgatory"), (0x9F000, "640 KiB"),
    (0x30000, "64 KiB real-mode segment"),
])
def test_checks_catch_bad_placement(elf, tmp_path, paddr, expect):
    bad = with_paddr(elf, tmp_path / "bad.elf", paddr)
    errors = [m for lvl, m in pl.PayloadImage.open(bad).checks() if lvl == "error"]
    assert any(expect in m for m in errors), errors
    line = assert_one_line_error(run_cli("inspect", bad), Exit.PAYLOAD_LIMITS)
    assert "segment" in line


def test_checks_catch_no_room_for_the_stack(elf, tmp_path):
    big = with_phdr(elf, tmp_path / "big.elf", memsz=0xF800)
    errors = [m for lvl, m in pl.PayloadImage.open(big).checks() if lvl == "error"]
    assert any("room for the stack" in m for m in errors), errors
    assert_one_line_error(run_cli("inspect", big), Exit.PAYLOAD_LIMITS)


def test_checks_pass_and_warn_for_unaligned(elf, img, tmp_path):
    assert not [m for lvl, m in img.checks() if lvl == "error"]
    odd = with_paddr(elf, tmp_path / "odd.elf", img.segments[0].paddr + 0x10)
    checks = pl.PayloadImage.open(odd).checks()
    assert any(lvl == "warning" and "page-aligned" in m for lvl, m in checks)


# --- build failures ----------------------------------------------------------------------------


def copy_sources(tmp: Path) -> Path:
    dst = tmp / "payloads"
    shutil.copytree(pl.payload_dir(), dst)
    return dst


def test_build_missing_binutils(elf, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    line = assert_one_line_error(run_cli("build", "-o", tmp_path / "x.elf", env=env),
                                 Exit.MISSING_TOOL)
    assert "binutils" in line


def test_build_assembler_error(elf, tmp_path):
    src = copy_sources(tmp_path)
    with open(src / pl.SOURCE_NAME, "a") as f:
        f.write("\n        not_an_instruction %eax\n")
    env = {**os.environ, "KEXECTEST_PAYLOAD_DIR": str(src)}
    line = assert_one_line_error(run_cli("build", "-o", tmp_path / "x.elf", env=env),
                                 Exit.BAD_INPUT)
    assert "assembler failed" in line and "not_an_instruction" in line


def test_build_too_big_is_payload_limits(elf, tmp_path):
    src = copy_sources(tmp_path)
    with open(src / pl.SOURCE_NAME, "a") as f:
        f.write("\n        .section .bss\n        .skip 0x10000\n")
    env = {**os.environ, "KEXECTEST_PAYLOAD_DIR": str(src)}
    line = assert_one_line_error(run_cli("build", "-o", tmp_path / "big.elf", env=env),
                                 Exit.PAYLOAD_LIMITS)
    assert "limits" in line
    assert not (tmp_path / "big.elf").exists()


def test_ensure_built_rebuilds_only_when_sources_change(elf, tmp_path, monkeypatch):
    src = copy_sources(tmp_path)
    monkeypatch.setenv("KEXECTEST_PAYLOAD_DIR", str(src))
    out = tmp_path / "e.elf"
    assert pl.ensure_built(out) == out
    for f in src.iterdir():
        os.utime(f, (1_000_000, 1_000_000))
    os.utime(out, (2_000_000, 2_000_000))
    pl.ensure_built(out)
    assert out.stat().st_mtime == 2_000_000  # untouched: sources are older
    os.utime(src / pl.SOURCE_NAME, (3_000_000, 3_000_000))
    pl.ensure_built(out)
    assert out.stat().st_mtime != 2_000_000  # rebuilt
    assert pl.PayloadImage.open(out).build_id


def test_build_to_an_unwritable_place(elf):
    line = assert_one_line_error(run_cli("build", "-o", "/proc/kexectest-nope/x.elf"),
                                 Exit.BAD_INPUT)
    assert "cannot write /proc/kexectest-nope/x.elf" in line


# --- the step table: one source (STEP lines), read from the ELF ----------------------------------


def test_step_table_meets_the_decoders(img):
    """Every step is titled, function registers only on BIOS calls, optional only for BIOS
    services, and every step a decoder is registered for is a row of the table."""
    from kexectest.analysis.decoders import DECODERS

    ids = [s.name for s in img.steps]
    assert img.step_meta and len(set(ids)) == len(ids)
    for s in img.steps:
        assert s.title and s.title.strip() == s.title, s
        assert (s.int == 0) <= (s.fn == "" and not s.optional), s  # built-ins: no function
        if s.fn:
            assert s.function.startswith(s.fn.split("+")[0] + "="), s
    assert not set(DECODERS) - set(ids), "decoders for steps the payload does not have"
    optional = {s.name for s in img.steps if s.optional}
    assert {"ist", "apm-check", "vbe-info", "edd-check"} <= optional
    assert not optional & {"e820", "e801", "mem88", "disk-reset", "read-lba", "ticks"}
    e820 = img.steps[img.step_index("e820")]
    assert (e820.function, e820.title) == ("AX=E820h", "E820 memory map")
    assert img.steps[img.step_index("video-ega")].function == "AH=12h BL=10h"


def _same_table(cat, img):
    return [(i.index, i.id, i.int_no, i.function, i.title, i.optional)
            for i in cat.steps.values()] == \
           [(s.index, s.name, s.int, s.function, s.title, s.optional) for s in img.steps]


def test_catalogue_is_the_elf(elf, img):
    from kexectest.analysis import catalog
    from kexectest.analysis.decoders import Regs, decode_call
    from kexectest.trace import Record

    assert _same_table(catalog.default(), img)  # the default payload, built from the same sources
    with catalog.using(elf) as cat:
        assert _same_table(cat, img) and str(elf) in cat.source and cat.missing is None
        assert list(catalog.STEP_IDS) == [s.name for s in img.steps]
        assert set(catalog.OPTIONAL_SERVICES) == {s.name for s in img.steps if s.optional}
        assert catalog.step_info("e820") == catalog.STEPS["e820"]
        assert catalog.STEPS["e820"].index == 9
    fields = {"cf": "1", "eax": "00008600"}  # AH=86h: function not supported
    unsupported = Regs(Record("end", 0, "apm-check", fields, None, None))
    assert decode_call("apm-check", unsupported, {}).status == "ok"  # optional: information
    required = Regs(Record("end", 0, "e801", fields, None, None))
    assert decode_call("e801", required, {}).status == "error"


def test_catalogue_follows_the_payload_given(img, tmp_path):
    """Retitling a STEP line and marking it optional is all it takes: the catalogue of that ELF
    says so, and the default catalogue is untouched."""
    from kexectest.analysis import catalog

    src = copy_sources(tmp_path)
    steps = src / "steps.S"
    text = steps.read_text()
    assert 'STEP e801, 0x15, title="E801 memory size", fn=AX, eax=0xE801\n' in text
    steps.write_text(text.replace('title="E801 memory size", fn=AX, eax=0xE801',
                                  'title="E801 size below and above 16 MiB", fn=AX, eax=0xE801, '
                                  'need=optional'))
    env = {**os.environ, "KEXECTEST_PAYLOAD_DIR": str(src)}
    assert run_cli("build", "-o", tmp_path / "fork.elf", env=env).returncode == 0
    fork = pl.PayloadImage.open(tmp_path / "fork.elf")
    loaded = [(s.name, s.int, s.flags, s.eax) for s in fork.steps]
    assert loaded == [(s.name, s.int, s.flags, s.eax) for s in img.steps]  # the rows are the same
    with catalog.using(fork):
        assert catalog.step_info("e801").title == "E801 size below and above 16 MiB"
        assert "e801" in catalog.OPTIONAL_SERVICES
    assert catalog.step_info("e801").title == "E801 memory size"
    assert "e801" not in catalog.OPTIONAL_SERVICES


def test_step_without_title_does_not_assemble(elf, tmp_path):
    src = copy_sources(tmp_path)
    with open(src / "steps.S", "a") as f:
        f.write("\n\t.subsection 2\n\tSTEP extra, 0x15, eax=0xE801\n\t.subsection 0\n")
    env = {**os.environ, "KEXECTEST_PAYLOAD_DIR": str(src)}
    proc = run_cli("build", "-o", tmp_path / "x.elf", env=env)
    line = assert_one_line_error(proc, Exit.BAD_INPUT)
    assert "assembler failed" in line and "STEP extra: no title" in line


def test_loaded_image_carries_no_metadata(elf, img, tmp_path):
    """The metadata section is not loaded: removing it leaves the load segment byte for byte,
    and such an ELF (as from before the section) reads with untitled steps and a warning."""
    from kexectest.analysis import catalog

    bare = tmp_path / "bare.elf"
    subprocess.run(["objcopy", "--remove-section", ".kt_step_meta", elf, bare], check=True)
    old = pl.PayloadImage.open(bare)
    seg = img.segments[0]
    assert old.read(seg.vaddr, seg.filesz) == img.read(seg.vaddr, seg.filesz)
    assert not old.step_meta and [s.name for s in old.steps] == [s.name for s in img.steps]
    assert all(s.title is None and not s.optional for s in old.steps)
    assert any(lvl == "warning" and "no step metadata" in m for lvl, m in old.checks())
    cat = catalog.for_payload(old)
    assert cat.steps["e820"].title == f"untitled ({bare} has no step metadata)"
    assert cat.steps["e820"].int_no == 0x15 and not cat.optional


def test_metadata_that_does_not_match_the_table_is_bad_input(elf, img, tmp_path):
    records = [f"{s.name}\0{s.title}\0{s.fn}\0{'optional' if s.optional else 'required'}\0"
               for s in img.steps]
    for name, body in (("short", records[:-1]), ("swapped", [records[1], records[0], *records[2:]]),
                       ("need", [records[0].replace("required", "maybe"), *records[1:]])):
        meta = tmp_path / f"{name}.bin"
        meta.write_bytes(("kt-step-meta 1\0" + "".join(body)).encode())
        bad = tmp_path / f"{name}.elf"
        subprocess.run(["objcopy", "--update-section", f".kt_step_meta={meta}", elf, bad],
                       check=True)
        line = assert_one_line_error(run_cli("inspect", bad), Exit.BAD_INPUT)
        assert ".kt_step_meta" in line and str(bad) in line, (name, line)


def test_no_step_table_without_binutils(tmp_path):
    """No ELF can be built: the analysis runs from the trace alone, names steps by their begin
    lines, and its titles say why instead of inventing any."""
    src = copy_sources(tmp_path)
    for f in src.iterdir():
        os.utime(f)  # newer than any built ELF: one would have to be built
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "KEXECTEST_PAYLOAD_DIR": str(src)}
    log = Path(__file__).parent / "corpus" / "hung-edd-params.log"
    proc = run_cli("report", log, "--json", env=env)
    assert proc.returncode == VERDICT_EXIT["hung"], proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["verdict"] == "hung" and rep["hang"]["step"] == "edd-params"
    assert rep["hang"]["call"].startswith("int 13h") and rep["hang"]["drive"] == 0x80
    assert "no step table" in rep["hang"]["title"] and "binutils" in rep["hang"]["title"]
    assert rep["steps"][9]["id"] == "e820"  # from its begin line
    assert all(s["title"].startswith("untitled (no step table") for s in rep["steps"])
    assert rep["steps"][42]["id"] == "step-042"  # never begun: no name to give it


# --- the payload options: one table ---------------------------------------------------------


def sample(o):
    """A value for option `o` that differs from the payload's default and is valid."""
    return {"int": lambda: o.default // 2, "port": lambda: o.default + 8, "step": lambda: "e820",
            "steps": lambda: ("e820", "1"), "switch": lambda: not o.default}[o.kind]()


def test_option_defaults_are_the_built_payloads(img):
    from kexectest.payload.options import OPTIONS

    built = img.config.to_dict()
    built.update(hang_at=built["hang_step"], reset_at=built["reset_step"],
                 skip=tuple(built["skip"]))
    assert [(o.name, o.default) for o in OPTIONS] == [(o.name, built[o.name]) for o in OPTIONS]


@pytest.mark.parametrize("name", CONFIG_OPTION_NAMES)
def test_every_option_row_reaches_the_config_block(elf, img, tmp_path, name):
    """Each row alone makes its click option, its `kexectest load` words and its patch: the
    words the table writes parse back to the same value and change the built config block."""
    import click
    from click.testing import CliRunner

    from kexectest.commands.payload import config_options
    from kexectest.payload.options import BY_NAME, config_argv, config_kwargs

    o = BY_NAME[name]
    seen: list[dict] = []

    @click.command()
    @config_options
    def cmd(**options):
        seen.append(config_kwargs(options))

    res = CliRunner().invoke(cmd, o.argv(sample(o)))
    assert res.exit_code == 0, res.output
    kw = seen[-1]
    assert CliRunner().invoke(cmd, config_argv(kw)).exit_code == 0 and seen[-1] == kw
    assert [k for k, v in kw.items() if v not in (None, ())] == [o.implies or o.name]
    before = img.config.to_dict()
    after = pl.PayloadImage.open(pl.patch(elf, tmp_path / "o.elf", **kw)).config.to_dict()
    assert after != before
    if o.kind == "switch":
        assert after["flags"] ^ before["flags"] == o.flag
