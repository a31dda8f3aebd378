"""The bundle: atomic files, tarball, redaction, password scrubbing."""

from __future__ import annotations

import json
import socket
import tarfile

from kexectest.output import bundle


def _run_dir(tmp_path, raw: bytes):
    d = bundle.new_run_dir(tmp_path / "out")
    (d / "console.raw").write_bytes(raw)
    (d / "console.log").write_bytes(b"".join(b"+00000.000000\t" + ln + b"\n"
                                             for ln in raw.splitlines()))
    return d


def test_run_dir_names_are_unique(tmp_path):
    a, b = bundle.new_run_dir(tmp_path), bundle.new_run_dir(tmp_path)
    assert a != b and a.name.startswith("run-") and a.is_dir() and b.is_dir()


def test_finalize_writes_everything_atomically(tmp_path):
    d = _run_dir(tmp_path, b"hello\r\nKT mode real ~0000\r\n")
    elf = tmp_path / "payload.elf"
    elf.write_bytes(b"\x7fELF" + bytes(100))
    qemu = tmp_path / "qemu.err"
    qemu.write_text("qemu-system-x86_64: warning: TCG doesn't support requested feature\n")
    tarball = bundle.finalize(d, report={"verdict": "completed"}, summary="# ok\n",
                              environment={"x": 1}, payload_elf=elf,
                              extra_files={"qemu.stderr": qemu})
    assert tarball == d.parent / f"{d.name}.tar.gz"
    names = sorted(p.name for p in d.iterdir())
    assert names == ["console.log", "console.raw", "environment.json", "payload.elf",
                     "payload.elf.sha256", "qemu.stderr", "report.json", "summary.md"]
    assert not [p for p in d.parent.iterdir() if ".tmp-" in p.name]
    env = json.loads((d / "environment.json").read_text())
    digest = (d / "payload.elf.sha256").read_text().split()[0]
    assert env["payload"]["sha256"] == digest == bundle.sha256_file(elf)
    with tarfile.open(tarball) as tar:
        assert sorted(tar.getnames()) == sorted(f"{d.name}/{n}" for n in names)
        assert tar.extractfile(f"{d.name}/report.json").read() == (d / "report.json").read_bytes()


def test_redactor_hosts_addresses_serials():
    red = bundle.Redactor(["collector-7.lab.example"])
    text = (b"bench-tgt login: root\n"
            b"root@bench-tgt:~# ping collector-7\n"
            b"[ 1.0] systemd[1]: Hostname set to <bench-tgt>.\n"
            b"eth0: 52:54:00:AB:cd:01 inet 10.1.2.3/24 inet6 fe80::5054:ff:feab:cd01/64 "
            b"2001:db8::1\n"
            b"KTSNAP dmi product_serial=PF2ABCDE board_serial=\"X9-1\" uuid\n"
            b"Serial Number: 1234-5678\n"
            b"ivt v10=F000:FF53 v13=C000:1234 time 12:34:56 version 6.1.0 serial8250: ttyS0\n")
    red.collect(text)
    out = red.apply(text)
    for gone in (b"bench-tgt", b"collector-7", b"52:54:00:AB:cd:01", b"10.1.2.3",
                 b"fe80::5054:ff:feab:cd01", b"2001:db8::1", b"PF2ABCDE", b"X9-1", b"1234-5678"):
        assert gone not in out, gone
    # things that look a bit like addresses but are not, survive
    for kept in (b"F000:FF53", b"C000:1234", b"12:34:56", b"6.1.0", b"serial8250: ttyS0"):
        assert kept in out, kept
    # the same value gets the same placeholder everywhere
    assert out.count(b"<host-1>") >= 3 and b"<mac-1>" in out and b"<serial-1>" in out


def test_redacted_json_stays_valid():
    red = bundle.Redactor()
    doc = json.dumps({"edid": {"serial": 123456, "serial_string": "ABC123"},
                      "host": "x", "ip": "192.168.1.9"}).encode()
    out = json.loads(red.apply(doc, json_file=True))
    assert out["edid"]["serial"].startswith("<serial-") and out["ip"].startswith("<ip-")
    assert out["edid"]["serial_string"].startswith("<serial-")


def test_finalize_redacts_every_text_file_and_this_host(tmp_path):
    me = socket.gethostname().encode()
    d = _run_dir(tmp_path, b"box9 login: root\r\nhello from " + me + b" 172.16.0.5\r\n")
    bundle.finalize(d, report={"summary": "on box9 at 172.16.0.5"}, summary="box9 172.16.0.5\n",
                    environment={"collector_host": me.decode()}, redact=True)
    for p in d.iterdir():
        data = p.read_bytes()
        for gone in (b"box9", b"172.16.0.5", me):
            assert gone not in data, (p.name, gone)
    json.loads((d / "report.json").read_text())
    json.loads((d / "environment.json").read_text())


def test_finalize_scrubs_password_even_unredacted(tmp_path):
    d = _run_dir(tmp_path, b"Password: pa55-w0rd!\r\n")
    tarball = bundle.finalize(d, report={"quote": "pa55-w0rd!"}, summary="pa55-w0rd!\n",
                              environment={}, secret="pa55-w0rd!")
    for p in d.iterdir():
        assert b"pa55-w0rd!" not in p.read_bytes()
    with tarfile.open(tarball) as tar:
        for m in tar.getmembers():
            assert b"pa55-w0rd!" not in tar.extractfile(m).read()


def test_rewrite_handles_huge_lines(tmp_path):
    p = tmp_path / "console.raw"
    p.write_bytes(b"x" * (5 << 20) + b" 10.0.0.1 " + b"y" * (3 << 20))
    red = bundle.Redactor()
    bundle._rewrite(p, red.apply)
    data = p.read_bytes()
    assert b"10.0.0.1" not in data and b"<ip-1>" in data
    assert len(data) == (5 << 20) + (3 << 20) + len(b" <ip-1> ")


def test_redacted_environment_json_keeps_its_structure(tmp_path):
    """--redact changes values, never keys or structure: the `serial` object stays an object."""
    d = _run_dir(tmp_path, b"bench-tgt login: root\r\n")
    env = {"serial": {"url": "socket://10.1.2.3:7000", "baud": 115200, "parity": "N"},
           "collector_host": "bench-tgt", "timings": {"handoff_s": 1.5},
           "dmi": {"product_serial": "PF2ABCDE", "serial": None, "board": ["x", 1, True]}}
    bundle.finalize(d, report={"edid": {"serial": 4711}}, summary="x\n", environment=env,
                    redact=True)
    got = json.loads((d / "environment.json").read_text())
    assert set(got) == set(env) and set(got["serial"]) == {"url", "baud", "parity"}
    assert got["serial"]["url"] == "socket://<ip-1>:7000" and got["serial"]["baud"] == 115200
    assert got["collector_host"] == "<host-1>" and got["timings"] == {"handoff_s": 1.5}
    assert got["dmi"]["product_serial"].startswith("<serial-") and got["dmi"]["serial"] is None
    assert got["dmi"]["board"] == ["x", 1, True]
    assert json.loads((d / "report.json").read_text())["edid"]["serial"].startswith("<serial-")


def test_redaction_leaves_ordinary_words():
    """Only what docs/bundle-format.md names is redacted: not "Last" of "Last login:", not the
    8250 driver's "Serial:" line."""
    red = bundle.Redactor()
    text = (b"bench-tgt login: root\r\nPassword: \r\n"
            b"Last login: Mon Nov 23 10:00:00 UTC 2026 on ttyS0\r\n"
            b"[    0.9] Serial: 8250/16550 driver, 4 ports, IRQ sharing enabled\r\n"
            b"root@bench-tgt:~# echo Last\r\n"
            b"\x1b[?2004hroot@bench-tgt:~# \r\n")  # bash's bracketed-paste escape first
    red.collect(text)
    assert red.names == {b"bench-tgt"}
    out = red.apply(text)
    assert b"Last login: Mon Nov 23 10:00:00 UTC 2026 on ttyS0" in out
    assert b"Serial: 8250/16550 driver" in out and b"echo Last" in out
    assert b"<host-1> login: root" in out and b"root@<host-1>:~#" in out


def test_redacted_console_log_marks_the_lines_it_changed(tmp_path):
    from kexectest import trace
    from kexectest.output import consolelog

    kt = trace.format_line("KT mode real")
    d = _run_dir(tmp_path, f"box9 login: root\r\n{kt}\r\nlink 10.0.0.7 up\r\n".encode())
    bundle.finalize(d, report=None, summary=None, environment={}, redact=True)
    log = (d / "console.log").read_text().splitlines()
    assert log[0].startswith("+00000.000000*\t") and "<host-1> login: root" in log[0]
    assert log[1] == f"+00000.000000\t{kt}"  # untouched: no mark, still a payload record
    assert log[2].startswith("+00000.000000*\t") and "<ip-1>" in log[2]
    back = list(consolelog.read(d / "console.log"))
    assert [ln.scrubbed for ln in back] == [True, False, True]
    assert back[1].record is not None and back[1].record.kind == "mode"


def test_a_short_secret_is_not_scrubbed_in_the_bundle(tmp_path):
    """A password shorter than 8 characters (or all hex digits) is masked by the capture in the
    login dialogue only; the bundle never masks it in the evidence (timestamps, KT lines)."""
    kt = b"KT end 001 e820 eax=00000000 ~1234"
    d = _run_dir(tmp_path, b"[ 10.000000] up\r\n" + kt + b"\r\n")
    report = {"steps": [{"eax": "00000000"}]}
    bundle.finalize(d, report=report, summary="00000000\n", environment={}, secret="0000")
    assert kt in (d / "console.raw").read_bytes() and "*" not in (d / "console.log").read_text()
    assert json.loads((d / "report.json").read_text()) == report
    assert bundle.scrub_everywhere("pa55-w0rd!") and not bundle.scrub_everywhere("0000")
    assert not bundle.scrub_everywhere("DEADBEEF00") and not bundle.scrub_everywhere("1234567")
