"""Lab files: the examples load, and every kind of bad input is one line with Exit.CONFIG."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kexectest.errors import Exit, KexectestError
from kexectest.fleet.labfile import load_lab
from kexectest.payload.options import OPTIONS, config_argv, markdown

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
[defaults]
timeout = 20
tags = ["all"]
serial = { baud = 57600 }
trigger = { login = "root", password_env = "KT_TEST_PW" }

[[machine]]
name = "a"
tags = ["x"]
serial = { url = "socket://127.0.0.1:1" }

[[machine]]
name = "b"
serial = "socket://127.0.0.1:2"
timeout = 5
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "lab.toml"
    p.write_text(text)
    return p


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(KexectestError) as info:
        load_lab(write(tmp_path, text))
    assert info.value.code == Exit.CONFIG
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_examples_load():
    lab = load_lab(ROOT / "labs/virtual.toml")
    shapes = {(m.qemu.machine, m.qemu.memory) for m in lab.machines}
    assert {"pc", "q35"} == {s[0] for s in shapes}
    assert any(mem > 3584 for _, mem in shapes) and any(mem >= 5120 for _, mem in shapes)
    assert {m.load.get("via") for m in lab.machines} >= {"syscall", "kexec-tools", "file",
                                                       "kexec-tools-bzimage", "real-mode",
                                                       "direct"}
    assert 2 <= len(lab.select("fast")) <= 3
    assert all(m.kind == "virtual" for m in lab.machines)
    hw = load_lab(ROOT / "labs/example-hardware.toml")
    assert {m.kind for m in hw.machines} == {"hardware", "labgrid"}


def test_defaults_merge(tmp_path):
    lab = load_lab(write(tmp_path, GOOD))
    a, b = lab.machines
    assert a.tags == ["all", "x"] and b.tags == ["all"]
    assert a.serial.baud == 57600 and a.serial.url == "socket://127.0.0.1:1"
    assert b.serial.url == "socket://127.0.0.1:2" and b.serial.baud == 57600
    assert a.timeout == 20 and b.timeout == 5
    assert a.trigger.login == "root" and a.where.endswith("lab.toml:7")
    assert [m.name for m in lab.select("x")] == ["a"]
    assert [m.name for m in lab.select("b,x")] == ["a", "b"]
    assert lab.machine("b") is b


def test_syntax_error_names_line(tmp_path):
    msg = config_error(tmp_path, GOOD + "\n[[machine]\nname = 'c'\n")
    assert "lab.toml:17:10" in msg and "syntax" in msg


def test_unknown_key_suggests(tmp_path):
    msg = config_error(tmp_path, GOOD.replace('timeout = 5', 'timout = 5'))
    assert "lab.toml:15" in msg and "machine 'b'" in msg and "'timeout'" in msg
    msg = config_error(tmp_path, GOOD.replace('url = "socket', 'ulr = "socket'))
    assert "lab.toml:10" in msg and "serial.ulr" in msg and "'url'" in msg


def test_duplicate_name(tmp_path):
    msg = config_error(tmp_path, GOOD.replace('name = "b"', 'name = "a"'))
    assert "duplicate" in msg and "lab.toml:13" in msg and "lab.toml:7" in msg


@pytest.mark.parametrize("name", ["../x", "/", "", "a/b", "..", ".hidden"])
def test_escaping_names(tmp_path, name):
    msg = config_error(tmp_path, GOOD.replace('name = "b"', f'name = "{name}"'))
    assert "lab.toml:" in msg and "name" in msg


@pytest.mark.parametrize("name", ["box\\n", "box\\nrm", "\\nbox", "box/../x", "box\\t"])
def test_machine_names_are_matched_whole(tmp_path, name):
    """A name names a directory: a trailing newline (or any character outside the set) is
    refused, not accepted by a regex anchored with $."""
    msg = config_error(tmp_path, f'[[machine]]\nname = "{name}"\nserial = "socket://h:1"\n')
    assert "name must be 1-64 letters, digits" in msg


def test_password_literal_refused(tmp_path):
    msg = config_error(tmp_path, GOOD.replace('login = "root"', 'login = "root", password = "x"'))
    assert "password" in msg and "environment variable" in msg and "lab.toml:5" in msg


def test_bad_values(tmp_path):
    assert "trigger.kind" in config_error(tmp_path, GOOD + 'trigger = { kind = "telnet" }\n')
    assert "qemu.machine" in config_error(
        tmp_path, '[[machine]]\nname = "v"\nqemu = { machine = "isapc" }\n')
    assert "serial.url" in config_error(tmp_path, '[[machine]]\nname = "v"\n')
    assert "must be integer" in config_error(tmp_path, GOOD.replace("timeout = 5", 'retries = "2"'))
    assert "no [[machine]]" in config_error(tmp_path, "[defaults]\ntimeout = 3\n")


def test_disk_bus_and_drivers(tmp_path):
    """`disk_bus` is part of a virtual machine's shape, `drivers` the guest modules its runs
    load; labs/virtual.toml has a machine on every bus."""
    from kexectest.lab.diskbus import BUSES

    lab = load_lab(ROOT / "labs/virtual.toml")
    assert {m.qemu.disk_bus for m in lab.machines if m.qemu.disk_bus} == set(BUSES)
    m = lab.machine("q35-ahci-linux")
    assert (m.qemu.disk_bus, m.drivers) == ("ahci", ["ahci"]) and lab.machine("pc-256").drivers == []
    one = '[[machine]]\nname = "v"\nqemu = {{ machine = "{m}", {kv} }}\n'
    msg = config_error(tmp_path, one.format(m="q35", kv='disk_bus = "sata"'))
    assert "qemu.disk_bus must be one of ide, ahci" in msg and "lab.toml:3" in msg
    assert "use disk_bus ahci" in config_error(tmp_path, one.format(m="q35", kv='disk_bus = "ide"'))
    assert "qemu.drivers must be kernel module names, not 'ahci ata_piix'" in config_error(
        tmp_path, one.format(m="pc", kv='drivers = ["ahci ata_piix"]'))
    assert "must be array" in config_error(tmp_path, one.format(m="pc", kv='drivers = "ahci"'))
    direct = one.format(m="pc", kv='drivers = ["ahci"]') + 'load = { via = "direct" }\n'
    assert "boots the payload without it" in config_error(tmp_path, direct)


def test_missing_env_var_only_at_run_time(tmp_path, monkeypatch):
    lab = load_lab(write(tmp_path, GOOD))  # loading never needs the secret
    monkeypatch.delenv("KT_TEST_PW", raising=False)
    with pytest.raises(KexectestError) as info:
        lab.machine("a").password()
    assert info.value.code == Exit.CONFIG
    assert "KT_TEST_PW" in str(info.value) and "machine 'a'" in str(info.value)
    monkeypatch.setenv("KT_TEST_PW", "s3cret")
    assert lab.machine("a").password() == "s3cret"


def test_cli_one_line_and_exit_code(tmp_path):
    bad = write(tmp_path, GOOD.replace('timeout = 5', 'timout = 5'))
    proc = subprocess.run([sys.executable, "-m", "kexectest", "sweep", str(bad), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == Exit.CONFIG, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "lab.toml:15" in lines[0] and "Traceback" not in proc.stderr


# --- the payload options in a lab file: the keys are the table's --------------------------------

TOML_SAMPLE = {"int": "2", "port": '"0x2f8"', "step": '"e820"', "steps": '["e820", 3]',
               "switch": "true"}


@pytest.mark.parametrize("option", OPTIONS, ids=[o.name for o in OPTIONS])
def test_every_payload_option_is_a_load_key(tmp_path, option):
    """A lab file takes every payload option under [load]; the virtual lab turns it into the
    same `kexectest load` words as the command line."""
    from kexectest.lab.runner import _split_config

    text = (f'[[machine]]\nname = "v"\nqemu = {{ machine = "pc" }}\n'
            f'load = {{ via = "syscall", {option.name} = {TOML_SAMPLE[option.kind]} }}\n')
    m = load_lab(write(tmp_path, text)).machine("v")
    config = _split_config({k: v for k, v in m.load.items() if k != "via"})
    assert option.cli in config_argv(config)
    wrong = '"yes"' if option.kind in ("switch", "int") else "1.5"
    msg = config_error(tmp_path, text.replace(TOML_SAMPLE[option.kind], wrong))
    assert f"load.{option.name} must be" in msg and "lab.toml:4" in msg


def test_a_port_that_is_not_a_number_is_one_line():
    from kexectest.lab.runner import _split_config

    with pytest.raises(KexectestError) as info:
        _split_config({"uart_base": "com2"})
    assert info.value.code == Exit.CONFIG
    assert "load.uart_base: 'com2' is not a number" in str(info.value)


def test_docs_list_the_table():
    """docs/lab-files.md shows the table payload/options.py makes, row for row."""
    doc = (ROOT / "docs/lab-files.md").read_text()
    block = doc.split("<!-- payload options: begin -->\n", 1)[1]
    block = block.split("<!-- payload options: end -->", 1)[0]
    assert block == markdown(), "replace the block in docs/lab-files.md with:\n" + markdown()


def test_agent_is_a_run_key_not_a_shape_key(tmp_path):
    """`qemu.agent` says how the payload gets into the guest (lab run --agent); it never
    changes the machine's shape, and the interference matrix gives every machine the same."""
    lab = load_lab(ROOT / "labs/interference.toml")
    assert {m.agent for m in lab.machines} == {"9p"}
    assert load_lab(ROOT / "labs/virtual.toml").machine("pc-256").agent == "auto"
    one = '[[machine]]\nname = "v"\nqemu = {{ machine = "pc", {kv} }}\n'
    p = tmp_path / "a.toml"
    p.write_text(one.format(kv='agent = "shell"'))
    m = load_lab(p).machine("v")
    assert m.agent == "shell" and not hasattr(m.qemu, "agent")
    msg = config_error(tmp_path, one.format(kv='agent = "ftp"'))
    assert "qemu.agent must be one of auto, python, shell, 9p, not 'ftp'" in msg
