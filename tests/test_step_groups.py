"""The BIOS concern of each step: the GROUP lines of payloads/steps.S, carried in the step
metadata (format 2) and read from the ELF; one source for the sweep matrix's columns."""

from __future__ import annotations

import itertools
import os
import subprocess

from kexectest import payload as pl
from kexectest.errors import Exit
from test_payload_elf import assert_one_line_error, copy_sources, run_cli

CONCERNS = {"state", "memory", "A20", "keyboard", "system", "APM", "disk", "video", "time",
            "PCI", "boot"}


def test_every_step_has_the_group_of_the_lines_above_it(built_payload):
    img = pl.PayloadImage.open(built_payload)
    assert img.step_meta and {s.group for s in img.steps} == CONCERNS
    by = {s.name: s.group for s in img.steps}
    assert (by["e820"], by["a20-kbc"], by["edd-params"], by["fdpt-hd1"], by["edid"]) == \
           ("memory", "A20", "disk", "disk", "video")
    assert (by["pci-bios"], by["wait"], by["ticks"], by["sti"], by["int19-boot"]) == \
           ("PCI", "time", "time", "state", "boot")
    # the table runs group by group (time comes back after PCI, as steps.S orders the calls)
    runs = [g for g, _ in itertools.groupby(s.group for s in img.steps)]
    assert runs.count("time") == 2 and len(runs) == len(CONCERNS) + 1


def test_step_before_any_group_does_not_assemble(tmp_path):
    src = copy_sources(tmp_path)
    steps = src / "steps.S"
    text = steps.read_text()
    assert "\tGROUP state\n" in text
    steps.write_text(text.replace("\tGROUP state\n", "", 1))
    env = {**os.environ, "KEXECTEST_PAYLOAD_DIR": str(src)}
    line = assert_one_line_error(run_cli("build", "-o", tmp_path / "x.elf", env=env), Exit.BAD_INPUT)
    assert "assembler failed" in line and "STEP state: no GROUP line" in line


def test_format_1_metadata_still_reads_without_groups(built_payload, tmp_path):
    """An ELF from before groups (four strings a record) reads with titles and no groups."""
    img = pl.PayloadImage.open(built_payload)
    body = "".join(f"{s.name}\0{s.title}\0{s.fn}\0{'optional' if s.optional else 'required'}\0"
                   for s in img.steps)
    meta = tmp_path / "v1.bin"
    meta.write_bytes(("kt-step-meta 1\0" + body).encode())
    old = tmp_path / "v1.elf"
    subprocess.run(["objcopy", "--update-section", f".kt_step_meta={meta}", built_payload, old],
                   check=True)
    v1 = pl.PayloadImage.open(old)
    assert v1.step_meta and [s.title for s in v1.steps] == [s.title for s in img.steps]
    assert {s.group for s in v1.steps} == {""}
    bad = tmp_path / "bad.bin"
    bad.write_bytes(("kt-step-meta 2\0" + "".join(
        f"{s.name}\0{s.title}\0{s.fn}\0required\0no group!\0" for s in img.steps)).encode())
    subprocess.run(["objcopy", "--update-section", f".kt_step_meta={bad}", built_payload,
                    tmp_path / "bad.elf"], check=True)
    line = assert_one_line_error(run_cli("inspect", tmp_path / "bad.elf"), Exit.BAD_INPUT)
    assert "bad group" in line
