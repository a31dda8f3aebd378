"""Serial console opening and the capture loop, over real ptys and real TCP on 127.0.0.1.

The helpers at the top (pty consoles, paced feeders, handwritten traces) are shared by the
other collector tests (test_session, test_target, test_ser2net)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from kexectest import trace
from kexectest.capture import capture, follower, transport
from kexectest.errors import Exit, KexectestError

BAUD_BYTES_S = 11520  # 115200 baud, 8N1


# -- shared helpers ----------------------------------------------------------------------------

def kt(body: str) -> str:
    return trace.format_line(body)


# plausible answers (eax, ebx, ecx) so the decoders call the steps ok
_REGS = {"e820": ("534D4150", "00000000", "00000014"),
         "edd-check": ("00003000", "0000AA55", "00000007"),
         "vbe-info": ("0000004F", "00000000", "00000000")}


def trace_lines(steps=("e820", "edd-check", "vbe-info"), *, done=True, hang_at=None,
                reset_at=None) -> list[str]:
    """A handwritten payload trace with correct checksums, after a little kernel noise."""
    out = ["[   12.100000] kexec_core: Starting new kernel",
           kt(f"KT banner version=0.1.0 build={'AB' * 20} entry=32 uart=03F8 div=0001 "
              f"steps={len(steps):03d}"),
           kt("KT mode real")]
    for i, name in enumerate(steps):
        out.append(kt(f"KT begin {i:03d} {name} int=15 ax=E820"))
        if i == hang_at:
            return out
        if i == reset_at:
            out.append("SeaBIOS (version 1.16.2-debian-1.16.2-1)")
            out.append(out[1])
            return out
        eax, ebx, ecx = _REGS.get(name, ("00000000", "00000000", "00000000"))
        out.append(kt(f"KT end {i:03d} {name} cf=0 eax={eax} ebx={ebx} ecx={ecx} "
                      "edx=00000000 esi=00000000 edi=00000000 ds=2000 es=2000 fl=0202"))
    if done:
        out.append(kt(f"KT done steps={len(steps):03d} errors=000"))
        out.append(kt("KT mode halt"))
    return out


def encode(lines: list[str]) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


def paced_write(write, data: bytes, rate: int = BAUD_BYTES_S, chunk: int = 64) -> None:
    """Write like a UART at `rate` bytes/s (roughly: chunks with sleeps)."""
    for i in range(0, len(data), chunk):
        write(data[i:i + chunk])
        time.sleep(chunk / rate)


class PtyConsole:
    """A real pty pair: the collector opens `path` (the slave) like /dev/ttyUSB0; the test plays
    the machine under test on the master."""

    def __init__(self):
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        self._slave = slave  # kept open until the collector has opened the path

    def release_slave(self):
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.master is not None:
            try:
                n = os.write(self.master, view)
            except OSError:  # the test is over and closed the pty
                return
            view = view[n:]

    def feed_later(self, data: bytes, *, delay=0.2, close=False, rate=BAUD_BYTES_S):
        def run():
            time.sleep(delay)
            self.release_slave()
            paced_write(self.write, data, rate)
            if close:
                time.sleep(0.1)
                self.close()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def close(self):
        self.release_slave()
        if self.master is not None:
            os.close(self.master)
            self.master = None


@pytest.fixture
def pty_console():
    con = PtyConsole()
    yield con
    con.close()


class TcpConsole:
    """A console server on 127.0.0.1 (like QEMU's tcp:...,server=on or ser2net raw)."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self.conn = None

    def serve_later(self, data: bytes, *, then: str = "keep", hold: float = 30.0):
        """Accept, send data paced, then "keep" open (silence), "close", or "reset"."""
        def run():
            self.conn, _ = self.srv.accept()
            paced_write(self.conn.sendall, data)
            time.sleep(0.1)
            if then == "reset":
                self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.conn.close()
            elif then == "close":
                self.conn.close()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def close(self):
        for s in (self.conn, self.srv):
            try:
                if s is not None:
                    s.close()
            except OSError:
                pass


def capture_one(url: str, tmp_path: Path, *, timeout=1.0, max_time=30.0, secret=None):
    port = transport.open_port(transport.SerialSettings(url))
    cap = capture.Capture(tmp_path / "run", secret=secret)
    cap.arm()
    try:
        reason = follower.follow(port, cap, timeout=timeout, max_time=max_time)
    finally:
        cap.close()
        port.close()
    return reason, cap


# -- opening -----------------------------------------------------------------------------------

def test_missing_device_is_one_serial_error():
    with pytest.raises(KexectestError) as err:
        transport.open_port(transport.SerialSettings("/dev/ttyDOESNOTEXIST9"))
    assert err.value.code == Exit.SERIAL
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)


def test_unknown_scheme():
    with pytest.raises(KexectestError) as err:
        transport.open_port(transport.SerialSettings("gopher://127.0.0.1:70"))
    assert err.value.code == Exit.SERIAL
    assert "unknown serial URL scheme 'gopher'" in str(err.value)


def test_connection_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(KexectestError) as err:
        transport.open_port(transport.SerialSettings(f"socket://127.0.0.1:{port}"))
    assert err.value.code == Exit.SERIAL and "refused" in str(err.value)


def test_busy_device(pty_console):
    first = transport.open_port(transport.SerialSettings(pty_console.path))
    try:
        with pytest.raises(KexectestError) as err:
            transport.open_port(transport.SerialSettings(pty_console.path))
        assert err.value.code == Exit.SERIAL and "busy" in str(err.value)
    finally:
        first.close()


def test_bad_parity():
    with pytest.raises(KexectestError) as err:
        transport.open_port(transport.SerialSettings("loop://", parity="X"))
    assert err.value.code == Exit.USAGE


# -- capture -----------------------------------------------------------------------------------

def test_pty_completed_keeps_every_byte(pty_console, tmp_path):
    data = encode(trace_lines())
    pty_console.feed_later(data)
    reason, cap = capture_one(pty_console.path, tmp_path, timeout=5)
    assert reason == "final"
    raw = (tmp_path / "run" / "console.raw").read_bytes()
    assert raw == data
    logged = list(capture.read_log(tmp_path / "run" / "console.log"))
    assert [ln.text for ln in logged] == trace_lines()
    assert all(ln.record is not None for ln in logged[1:])
    ts = [ln.t for ln in logged]
    assert ts == sorted(ts) and ts[-1] > ts[0]


def test_silence_timeout_after_hang(pty_console, tmp_path):
    lines = trace_lines(hang_at=1)
    pty_console.feed_later(encode(lines))
    reason, cap = capture_one(pty_console.path, tmp_path, timeout=0.5)
    assert reason == "timeout"
    assert cap.live.current == (1, "edd-check")
    assert cap.deadline_hit is not None and cap.stop_time >= cap.deadline_hit


def test_reset_stops_capture(pty_console, tmp_path):
    pty_console.feed_later(encode(trace_lines(reset_at=2)))
    reason, cap = capture_one(pty_console.path, tmp_path, timeout=5)
    assert reason == "reset"


def test_pty_vanishes_mid_run_keeps_bytes(pty_console, tmp_path):
    data = encode(trace_lines(steps=("e820",) * 20, hang_at=12))
    pty_console.feed_later(data, close=True)
    reason, cap = capture_one(pty_console.path, tmp_path, timeout=10)
    assert reason in ("eof", "lost")
    assert (tmp_path / "run" / "console.raw").read_bytes() == data


def test_tcp_reset_mid_run_keeps_bytes(tmp_path):
    srv = TcpConsole()
    data = encode(trace_lines(steps=("e820",) * 20, hang_at=12))
    srv.serve_later(data, then="reset")
    try:
        reason, cap = capture_one(srv.url, tmp_path, timeout=10)
    finally:
        srv.close()
    assert reason == "lost"
    assert (tmp_path / "run" / "console.raw").read_bytes() == data


def test_tcp_clean_close_is_eof(tmp_path):
    srv = TcpConsole()
    data = encode(trace_lines(hang_at=1))
    srv.serve_later(data, then="close")
    try:
        reason, _ = capture_one(srv.url, tmp_path, timeout=10)
    finally:
        srv.close()
    assert reason == "eof"
    assert (tmp_path / "run" / "console.raw").read_bytes() == data


def test_garbage_and_nuls(pty_console, tmp_path):
    rnd = bytes(range(256)) * 8 + os.urandom(4096) + b"\0\0\0KT mode real\0 ~0000\r\n"
    pty_console.feed_later(rnd, rate=200_000)
    reason, cap = capture_one(pty_console.path, tmp_path, timeout=0.5)
    assert reason == "timeout"
    assert (tmp_path / "run" / "console.raw").read_bytes() == rnd
    log = (tmp_path / "run" / "console.log").read_text(encoding="utf-8")
    assert "\0" not in log
    assert all(capture._LOG_RE.match(x) for x in log.split("\n")[:-1])


def test_tty_keeps_what_came_before_open(tmp_path):
    """Bytes already waiting in the tty when the collector opens it are kept (pyserial would
    flush them with tcflush on open)."""
    import tty

    con = PtyConsole()
    try:
        tty.setraw(con._slave)  # as a line left raw by an earlier run: the bytes stay as sent
        data = encode(trace_lines())
        con.write(data)  # the slave is still open here, so the tty holds the bytes
        time.sleep(0.2)
        port = transport.open_port(transport.SerialSettings(con.path))
        con.release_slave()
        cap = capture.Capture(tmp_path / "run")
        cap.arm()
        try:
            assert follower.follow(port, cap, timeout=1.0) == "final"
        finally:
            cap.close()
            port.close()
        assert (tmp_path / "run" / "console.raw").read_bytes() == data
    finally:
        con.close()


def test_socket_keeps_what_came_with_the_connection(tmp_path):
    """A server that talks the moment it accepts (QEMU's console, ser2net): nothing lost."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    data = encode(trace_lines(steps=("e820",) * 40))

    def serve():
        conn, _ = srv.accept()
        conn.sendall(data)
        time.sleep(5)
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    try:
        reason, _ = capture_one(f"socket://127.0.0.1:{srv.getsockname()[1]}", tmp_path)
    finally:
        srv.close()
    assert reason == "final"
    assert (tmp_path / "run" / "console.raw").read_bytes() == data


def test_rfc2217_url_gets_ign_set_control():
    from kexectest.capture.urlhandler.protocol_rfc2217 import with_option
    assert with_option("rfc2217://h:1", "ign_set_control") == "rfc2217://h:1?ign_set_control"
    assert with_option("rfc2217://h:1?timeout=3", "ign_set_control") == \
        "rfc2217://h:1?timeout=3&ign_set_control"
    assert with_option("rfc2217://h:1?ign_set_control", "ign_set_control") == \
        "rfc2217://h:1?ign_set_control"


def test_loop_url_is_polled(tmp_path):
    """loop:// has no file descriptor: the follower polls it through pyserial."""
    port = transport.open_port(transport.SerialSettings("loop://"))
    assert port.fd is None
    cap = capture.Capture(tmp_path / "run")
    cap.arm()
    port.serial.write(encode(trace_lines()))
    reason = follower.follow(port, cap, timeout=2)
    cap.close()
    assert reason == "final"


def test_multi_console_follower(tmp_path):
    """One selector loop, three consoles, three different endings."""
    cons = [PtyConsole() for _ in range(3)]
    fol = follower.Follower()
    caps = []
    try:
        for i, con in enumerate(cons):
            port = transport.open_port(transport.SerialSettings(con.path))
            cap = capture.Capture(tmp_path / f"c{i}")
            cap.arm()
            fol.add(port, cap, timeout=0.7)
            caps.append((port, cap))
        cons[0].feed_later(encode(trace_lines()))
        cons[1].feed_later(encode(trace_lines(hang_at=2)))
        cons[2].feed_later(encode(trace_lines(reset_at=1)))
        fol.run()
    finally:
        fol.close()
        for port, cap in caps:
            cap.close()
            port.close()
        for con in cons:
            con.close()
    assert [cap.stop_reason for _, cap in caps] == ["final", "timeout", "reset"]


def test_silence_clock_waits_for_handoff(pty_console, tmp_path):
    """Before arm() no silence timeout fires; the overall limit still does."""
    port = transport.open_port(transport.SerialSettings(pty_console.path))
    cap = capture.Capture(tmp_path / "run")
    try:
        reason = follower.follow(port, cap, timeout=0.2, max_time=1.0)
    finally:
        cap.close()
        port.close()
    assert reason == "max-time"


# -- pieces ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cuts", [[3], [1, 2, 3, 4, 5, 6, 7], [10, 11], []])
def test_scrubber_across_reads(cuts):
    secret = b"s3cr3t!"
    stream = b"login: root\r\nPassword: s3cr3t!\r\nroot@box:~# echo s3cr3t! s3cr3"
    pieces, last = [], 0
    for c in cuts + [len(stream)]:
        pieces.append(stream[last:c])
        last = c
    sc = capture.Scrubber(secret)
    out = b"".join(sc.feed(p) for p in pieces) + sc.flush()
    assert secret not in out
    assert out == stream.replace(secret, b"********")


def test_log_format_round_trip(tmp_path):
    lines = [trace.Line("hello\tworld", 1.5), trace.Line("x" * 10, 2.0, truncated=True),
             trace.parse_line(kt("KT mode real").encode(), 3.25)]
    path = tmp_path / "console.log"
    path.write_text("".join(capture.format_log_line(ln) for ln in lines))
    text = path.read_text()
    assert text.startswith("+00001.500000\thello\tworld\n+00002.000000~\t")
    back = list(capture.read_log(path))
    assert [(b.text, b.t, b.truncated) for b in back] == [(a.text, a.t, a.truncated) for a in lines]
    assert back[2].record is not None and back[2].record.kind == "mode"


def test_read_log_bounds_huge_line_pieces(tmp_path):
    path = tmp_path / "console.log"
    with open(path, "w") as fh:
        for _ in range(1000):
            fh.write(capture.format_log_line(trace.Line("A" * 4096, 1.0, truncated=True)))
        fh.write(capture.format_log_line(trace.Line("after", 2.0)))
    back = list(capture.read_log(path))
    assert len(back) == 3 and back[-1].text == "after"


def test_capture_log_is_on_disk_after_every_read(tmp_path):
    """console.log holds every complete line of a read (format_log_line each) once feed returns."""
    now = [100.0]
    cap = capture.Capture(tmp_path, clock=lambda: now[0])
    chunks = [b"[  1.0] k\xc3\xa9rnel\r\n" + kt("KT mode real").encode() + b"\r\nhalf",
              b" line\r\n" + b"L" * (trace.MAX_LINE + 10) + b"\n", b"\xff\xfebad\n\n", b"no end"]
    expect = []
    for i, chunk in enumerate(chunks):
        now[0] = 100.0 + i * 0.25
        cap.feed(chunk)
        log = (tmp_path / capture.LOG_NAME).read_text()
        expect += [capture.format_log_line(ln) for ln in list(cap.tail)[len(expect):]]
        assert log == "".join(expect)
        assert (tmp_path / capture.RAW_NAME).read_bytes() == b"".join(chunks[:i + 1])
    cap.close()
    assert [ln.text for ln in cap.tail] == ["[  1.0] k\u00e9rnel", kt("KT mode real"), "half line",
                                             "L" * trace.MAX_LINE, "L" * 10, "\ufffd\ufffdbad", "no end"]
    assert (tmp_path / capture.LOG_NAME).read_text().splitlines()[3].startswith("+00000.250000~\t")
    assert cap.tail[1].record is not None and cap.lines == 7


def test_follower_tick_grows_with_the_consoles_followed():
    auto = follower.Follower()
    try:
        assert auto._tick(1) == auto._tick(follower.TICK_CONSOLES) == follower.TICK_S
        assert auto._tick(2 * follower.TICK_CONSOLES) == 2 * follower.TICK_S
        assert auto._tick(256) == auto._tick(10_000) == follower.TICK_MAX_S
    finally:
        auto.close()
    fixed = follower.Follower(tick=0.2)
    try:
        assert fixed._tick(1) == fixed._tick(500) == 0.2
    finally:
        fixed.close()


# -- scrubbing the login password --------------------------------------------------------------

def _feed_lines(cap, lines, chunk=7):
    data = encode(lines)
    for i in range(0, len(data), chunk):
        cap.feed(data[i:i + chunk])


def test_a_scrubbed_line_is_marked_and_never_a_payload_answer(tmp_path):
    secret = "Tr0ub4dor&3-kt"
    cap = capture.Capture(tmp_path, secret=secret.encode())
    hit = kt(f"KT mode {secret}")  # a valid KT line that happens to hold the secret
    _feed_lines(cap, ["Password: " + secret, "root@box:~# go"])
    cap.arm()  # a long password stays masked after the dialogue too
    _feed_lines(cap, [hit, kt("KT mode real")])
    cap.close()
    assert secret.encode() not in (tmp_path / capture.RAW_NAME).read_bytes()
    log = (tmp_path / capture.LOG_NAME).read_text()
    assert secret not in log
    back = list(capture.read_log(tmp_path / capture.LOG_NAME))
    assert [ln.scrubbed for ln in back] == [True, False, True, False]
    assert back[2].record is None and back[2].bad_checksum and "********" in back[2].text
    assert back[3].record is not None and back[3].record.name == "real"
    assert log.splitlines()[2].startswith("+") and "*\t" in log.splitlines()[2]
    assert cap.scrubbed_lines == 2


def test_a_short_secret_is_masked_only_in_the_login_dialogue(tmp_path):
    """"0000" occurs in every KT end line: masking it there would rewrite the evidence."""
    cap = capture.Capture(tmp_path, secret=b"0000")
    _feed_lines(cap, ["[ 10.000000] getty", "bench login: root", "Password: "])
    cap.secret_sent()
    _feed_lines(cap, ["0000", "root@bench:~# kexec-go"])
    cap.arm()
    lines = trace_lines()
    _feed_lines(cap, lines)
    cap.close()
    raw = (tmp_path / capture.RAW_NAME).read_bytes()
    assert raw.startswith(b"[ 10.000000] getty\r\n")  # before the password went: as it came
    assert b"Password: \r\n********\r\n" in raw and raw.endswith(encode(lines))
    back = list(capture.read_log(tmp_path / capture.LOG_NAME))
    assert [ln.text for ln in back[5:]] == lines
    assert all(ln.record is not None for ln in back[6:]) and not any(ln.scrubbed for ln in back[4:])
    assert [ln.scrubbed for ln in back[:4]] == [False, False, False, True]
    assert back[3].text == "********"


def test_a_secret_cut_at_the_length_limit_is_still_masked(tmp_path):
    secret = b"s3cr3t-pa55w0rd"
    for cut in (1, 7, len(secret) - 1):
        d = tmp_path / str(cut)
        cap = capture.Capture(d, secret=secret)
        line = b"x" * (trace.MAX_LINE - cut) + secret + b" tail\r\n"
        for i in range(0, len(line), 1000):
            cap.feed(line[i:i + 1000])
        cap.close()
        for name in (capture.RAW_NAME, capture.LOG_NAME):
            data = (d / name).read_bytes()
            assert secret not in data and secret[:cut] + b"\n" not in data, (cut, name)
        back = list(capture.read_log(d / capture.LOG_NAME))
        assert [ln.scrubbed for ln in back] == [True, True]
        assert "".join(ln.text for ln in back).endswith("********" + " tail")
