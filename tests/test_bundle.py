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
