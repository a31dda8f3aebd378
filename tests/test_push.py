"""The push (capture/push.py, target/receiver.py): the agent and the payload sent through a real
console to a real shell -- over a pty and over TCP, through a relay that damages and drops
chunks, doubles line ends and clears the eighth bit -- arrive whole (the damaged chunks are sent
again; the files on the target have the right sha256), resume after a cut console, and every
way a target cannot take a push ends in one line naming the cause, with nothing run.

The target shells run on this host (as root for the push alone, as nobody where the pushed agent
runs: it refuses before anything is loaded)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kexectest.capture import push
from kexectest.capture.capture import Capture
from kexectest.capture.session import RunOptions, run_session
from kexectest.capture.transport import SerialSettings, open_port
from kexectest.capture.triggers import ConsoleSpawn, login
from kexectest.errors import Exit, KexectestError
from kexectest.target import pack
from shell_target import PROMPT_RE, Mangler, ShellTarget

BUSYBOX_PROMPT_RE = r"target# ?(\x1b\[6n)?$"  # busybox's line editor asks for the cursor


@pytest.fixture
def target(tmp_path):
    made = []

    def make(**kw):
        t = ShellTarget(tmp_path, **kw).start()
        made.append(t)
        return t
    yield make
    for t in made:
        t.stop()


def _pusher(t: ShellTarget, run_dir: Path, prompt=PROMPT_RE):
    port = open_port(SerialSettings(t.url))
    cap = Capture(run_dir)
    spawn = ConsoleSpawn(port, cap)
    login(spawn, user=None, password=None, prompt=prompt, timeout=15)
    return push.ConsolePush(spawn, reply_timeout=2.0), port, cap


def _push(t: ShellTarget, run_dir: Path, elf: Path, agent="auto", prompt=PROMPT_RE):
    """Probe, receiver and files, as the Push trigger does; returns (pusher, plan, tools)."""
    pusher, port, cap = _pusher(t, run_dir, prompt)
    try:
        tools = pusher.probe(push.need_kib(push.largest_files(elf)))
        plan, _ = push.plan_push(tools, elf, {}, via=None, agent=agent)
        pusher.start_receiver(tools)
        pusher.push(plan.files)
    finally:
        cap.close()
        port.close()
    return pusher, plan, tools


def _on_target(t: ShellTarget, plan) -> None:
    """Every pushed file is on the target, byte for byte."""
    for f in plan.files:
        got = (t.push_dir() / f.name).read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(f.data).hexdigest(), f.name


@pytest.mark.parametrize("tcp", [False, True], ids=["pty", "tcp"])
@pytest.mark.parametrize("bad", ["damaged-and-dropped", "crlf-7bit"])
def test_push_through_a_bad_console(target, tmp_path, built_payload, tcp, bad):
    mangle = (Mangler(damage={2, 9}, drop={5}) if bad == "damaged-and-dropped" else
              Mangler(damage={4}, crlf=True, seven_bit=True))
    t = target(tcp=tcp, mangle=mangle)
    pusher, plan, tools = _push(t, tmp_path / "run", built_payload)
    assert tools.python and plan.agent == "python"
    _on_target(t, plan)
    assert mangle.damaged == (2 if bad == "damaged-and-dropped" else 1)
    assert pusher.stats.resent_chunks >= mangle.damaged + mangle.dropped
    assert pusher.stats.compressed and pusher.stats.wire_bytes < pusher.stats.file_bytes
    raw = (tmp_path / "run" / "console.raw").read_bytes()
    assert b"KTPUSH want " in raw and b"KTPUSH done kexectest-agent.py " in raw


def test_push_to_busybox_ash_with_its_line_editor(target, tmp_path, built_payload):
    """busybox's interactive ash edits lines itself (raw mode): typed-ahead lines still arrive."""
    if shutil.which("busybox") is None:
        pytest.skip("busybox is not installed")
    t = target(argv=("busybox", "sh", "-i"), mangle=Mangler(damage={1}))
    pusher, plan, _ = _push(t, tmp_path / "run", built_payload, agent="shell",
                            prompt=BUSYBOX_PROMPT_RE)
    assert plan.agent == "shell" and [f.name for f in plan.files] == [
        pack.SHELL_AGENT_NAME, pack.PAYLOAD_NAME]
    _on_target(t, plan)


def test_an_interrupted_push_is_resumed_and_never_run(target, tmp_path, built_payload):
    """The console is cut half-way: one line naming it; the half-sent file is not in place (so
    nothing can run it).  The next push picks up where the target's copy ends."""
    first = target(mangle=Mangler(cut_after=20))
    with pytest.raises(KexectestError) as err:
        _push(first, tmp_path / "run1", built_payload)
    assert err.value.code == Exit.SERIAL
    assert str(err.value).startswith("console lost during the push: ")
    assert not (first.push_dir() / pack.AGENT_NAME).exists()
    assert list(first.push_dir().glob(f".{pack.AGENT_NAME}.*.b64"))
    first.stop()
    # how many of the 20 chunks the target wrote before the cut depends on the machine's load;
    # the next push must resume from exactly those (a chunk a whole line, as `wc -l` counts),
    # counted once the first target has ended
    kept = sum(p.read_bytes().count(b"\n")
               for p in first.push_dir().glob(f".{pack.AGENT_NAME}.*.b64"))
    assert kept >= 1
    again = target()
    pusher, plan, _ = _push(again, tmp_path / "run2", built_payload)
    _on_target(again, plan)
    assert pusher.stats.resumed_chunks == kept
    assert not list(again.push_dir().glob(".*.b64"))
    # and a third push finds both files in place: nothing is sent again
    third = target()
    pusher, plan, _ = _push(third, tmp_path / "run3", built_payload)
    assert pusher.stats.reused_files == 2 and pusher.stats.chunks == 0


def test_a_console_that_damages_everything_is_refused(target, tmp_path, built_payload):
    t = target(mangle=Mangler(damage_all=True))
    with pytest.raises(KexectestError) as err:
        _push(t, tmp_path / "run", built_payload)
    assert err.value.code == Exit.SERIAL
    assert "the console damages the push: chunk 0 of " in str(err.value)
    assert not (t.push_dir() / pack.AGENT_NAME).exists()


# -- targets that cannot take a push ---------------------------------------------------------

def _namespace(ro=(), tiny=None, hide=()):
    """A wrapper running the target shell in its own mount namespace: `ro` directories made
    read-only, `tiny` a directory with a small full tmpfs on it, `hide` files shadowed by an
    empty non-executable one."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a mount namespace")
    steps = []
    if tiny:
        steps.append(f"mount -t tmpfs -o size=64k tmpfs {tiny} && chmod 1777 {tiny} && "
                     f"(dd if=/dev/zero of={tiny}/fill bs=1k count=100 2>/dev/null; true)")
    for d in ro:
        steps.append(f"mount --bind {d} {d} && mount -o remount,bind,ro {d}")
    for f in hide:
        steps.append(f"mount --bind /dev/null {f}")
    script = " && ".join(steps) + ' && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"])
    if probe.returncode != 0:
        pytest.skip("unshare -m is not allowed here")
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]


def _run(t: ShellTarget, tmp_path: Path, elf: Path, **kw):
    opts = RunOptions(serial_url=t.url, push=True, prompt=PROMPT_RE, payload_elf=elf,
                      timeout=5, login_timeout=15, overall_timeout=120, out_dir=tmp_path / "out",
                      quiet=True, command_line=["pytest", "push"], **kw)
    return run_session(opts)


OTHERS = ("/dev/shm", "/run", "/var/tmp")


def test_read_only_tmp_is_named(target, tmp_path, built_payload):
    t = ShellTarget(tmp_path)
    t = target(wrap=_namespace(ro=(str(t.push_tmp), *OTHERS)))
    with pytest.raises(KexectestError) as err:
        _run(t, tmp_path, built_payload)
    assert err.value.code == Exit.NO_SPACE
    msg = str(err.value)
    assert msg.startswith("no directory on the target can take the push (")
    assert f"{t.push_tmp}: Read-only file system" in msg and "/var/tmp: Read-only" in msg


def test_full_tmp_is_named(target, tmp_path, built_payload):
    t = ShellTarget(tmp_path)
    t = target(wrap=_namespace(tiny=str(t.push_tmp), ro=OTHERS))
    with pytest.raises(KexectestError) as err:
        _run(t, tmp_path, built_payload)
    assert err.value.code == Exit.NO_SPACE
    assert f"{t.push_tmp}: only 0 KiB free (the push needs " in str(err.value)


def test_no_python_and_no_kexec_tools(target, tmp_path, built_payload):
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    bin_dir = tmp_path / "bb"
    bin_dir.mkdir()
    for applet in subprocess.run([busybox, "--list"], capture_output=True, text=True,
                                 check=True).stdout.split():
        (bin_dir / applet).symlink_to(busybox)
    kexec = [p for p in ("/usr/sbin/kexec", "/sbin/kexec") if os.path.isfile(p)][:1]
    t = target(argv=(str(bin_dir / "sh"), "-c", "stty -echo; exec sh -i"),
               env={"PATH": str(bin_dir)}, wrap=_namespace(hide=kexec) if kexec else ())
    with pytest.raises(KexectestError) as err:
        _run(t, tmp_path, built_payload)
    assert err.value.code == Exit.MISSING_TOOL
    assert str(err.value).startswith(
        "the target has neither Python 3.6 or later (python3) nor kexec-tools (kexec): nothing "
        "there can load the payload (bundle: ")


@pytest.mark.parametrize("agent, kind", [("auto", "pushed"), ("shell", "shell")])
def test_pushed_agent_run_by_a_non_root_user(target, tmp_path, built_payload, agent, kind):
    """`kexectest run --push` end to end against a shell of nobody's: the pushed agent runs,
    prints its snapshot, and refuses in its own one line, which the run reports."""
    t = target(as_nobody=True, env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    with pytest.raises(KexectestError) as err:
        _run(t, tmp_path, built_payload, push_agent=agent)
    assert err.value.code == Exit.TARGET_COMMAND
    assert "kexectest: error: not root (euid 65534): kexec needs CAP_SYS_BOOT; run as root" \
        in str(err.value)
    run_dir = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["target_agent"] == kind and env["mode"] == "serial-push"
    assert env["push"]["file_bytes"] > 20000 and env["push"]["directory"].endswith(
        "kexectest-push-65534")
    raw = (run_dir / "console.raw").read_bytes()
    assert b"KTSNAP begin v=1" in raw and b"KTSNAP end lines=" in raw


def test_push_and_a_command_do_not_mix(tmp_path, built_payload):
    with pytest.raises(KexectestError) as err:
        run_session(RunOptions(serial_url="loop://", push=True, command="kexectest load",
                               payload_elf=built_payload, out_dir=tmp_path, quiet=True))
    assert err.value.code == Exit.USAGE and "--push runs the pushed agent itself" in str(err.value)


# -- lab files -------------------------------------------------------------------------------

LAB = """
[[machine]]
name = "board"
serial = "socket://127.0.0.1:7001"
trigger = { login = "root", push = true }
load = { via = "kexec-tools", hang_at = "e820", uart_base = "0x2f8" }
"""


def test_lab_file_trigger_push(tmp_path):
    from kexectest.fleet import sweep
    from kexectest.fleet.labfile import load_lab

    path = tmp_path / "lab.toml"
    path.write_text(LAB)
    m = load_lab(path).machine("board")
    assert m.trigger.push is True
    got = sweep._push_options(m)
    assert got == {"push": True, "via": "kexec-tools", "payload_elf": None,
                   "load_options": {"hang_at": "e820", "uart_base": 0x2F8}}
    path.write_text(LAB.replace("push = true", 'push = true, command = "kexectest load"'))
    with pytest.raises(KexectestError) as err:
        load_lab(path)
    assert err.value.code == Exit.CONFIG and "trigger.push runs the pushed agent" in str(err.value)
    path.write_text(LAB.replace("push = true", 'push = "yes"'))
    with pytest.raises(KexectestError) as err:
        load_lab(path)
    assert err.value.code == Exit.CONFIG and "trigger.push must be bool" in str(err.value)


# -- over ssh --------------------------------------------------------------------------------

def test_push_over_ssh(tmp_path, built_payload):
    """`kexectest run --ssh HOST --push`: the real ssh client to a real SSH server here; the
    files go over ssh's channel and are checked there, then the agent runs over ssh (as nobody:
    it refuses, and the run says so in its one line)."""
    pytest.importorskip("asyncssh")
    if shutil.which("ssh") is None or os.geteuid() != 0:
        pytest.skip("needs ssh and root (to run the server's commands as nobody)")
    from ssh_server import SshServer

    from test_serialio import PtyConsole

    home = Path(tempfile.mkdtemp(prefix="kt-ssh-push-"))  # nobody cannot enter pytest's own
    home.chmod(0o1777)
    server = SshServer(tmp_path, {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/",
                                  "TMPDIR": str(home)})
    con = PtyConsole()
    try:
        opts = RunOptions(serial_url=con.path, push=True, ssh="root@127.0.0.1",
                          ssh_options=server.options, payload_elf=built_payload, timeout=20,
                          overall_timeout=120, out_dir=tmp_path / "out", quiet=True,
                          command_line=["pytest", "ssh-push"])
        with pytest.raises(KexectestError) as err:
            run_session(opts)
    finally:
        con.close()
        server.close()
    try:
        _check_ssh_push(err, home, tmp_path, built_payload, server)
    finally:
        shutil.rmtree(home)


def _check_ssh_push(err, home, tmp_path, built_payload, server):
    assert err.value.code == Exit.TARGET_COMMAND
    assert "exit 15" in str(err.value) and "not root (euid 65534)" in str(err.value)
    pushed = home / "kexectest-push-65534"
    for name in (pack.AGENT_NAME, pack.PAYLOAD_NAME):
        assert (pushed / name).is_file()
    assert (pushed / pack.PAYLOAD_NAME).read_bytes() == built_payload.read_bytes()
    run_dir = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["mode"] == "ssh-push" and env["target_agent"] == "pushed"
    assert any("kexectest-agent.py load kexec_test.elf" in c for c in server.commands)


# -- the line formats (pure units) -----------------------------------------------------------

def test_replies_carry_their_number_twice():
    from kexectest.target import receiver as r

    assert r.parse_reply("junk KTPUSH ok 17 999982\r") == ("ok", [17])
    assert r.parse_reply("KTPUSH want 3 999996") == ("want", [3])
    for damaged in ("KTPUSH ok 17 999983", "KTPUSH ok 1 999982", "KTPUSH ok 17", "KTPUSH ok x y",
                    "KTPUSH ok 17 999982 5"):
        assert r.parse_reply(damaged) is None, damaged
    assert r.parse_reply("target# echo \"$m dir $d\"") is None  # the echo of a typed line
    assert r.parse_reply("KTPUSH dir /tmp/a b") == ("dir", ["/tmp/a b"])
    assert r.parse_tools(["uid=0", "python=", "have=base64,md5sum"]) is None  # cut: no end
    assert r.parse_tools(["uid=0", "python=/usr/bin/python3", "have=base64,md5sum", "end"]) == {
        "uid": "0", "python": "/usr/bin/python3", "have": ["base64", "md5sum"]}


def test_chunks_decode_to_the_file():
    import base64
    import gzip

    from kexectest.target import receiver as r

    data = bytes(range(256)) * 40
    for compress in (False, True):
        chunks = r.encode_file(data, compress)
        assert all(len(c) <= r.CHUNK_BYTES * 4 // 3 + 4 and c.isascii() for c in chunks)
        body = b"".join(base64.b64decode(c) for c in chunks)
        assert (gzip.decompress(body) if compress else body) == data
        frame = r.chunk_frame(5, chunks[0], "md5sum")
        assert frame.startswith("C 5 ") and len(frame.split()[2]) == r.HASH_CHARS
    assert all(len(line) < 1024 for line in r.receiver_text().splitlines())
    assert len(r.probe_dir_command(10 ** 6)) < 1024 and len(r.probe_tools_command()) < 1024
    assert "KTPUSH" not in r.receiver_text() + r.probe_dir_command(1) + r.probe_tools_command()


def test_an_installed_kexectest_is_recorded_as_such(tmp_path, monkeypatch):
    """Without --push the command typed is the target's own: environment.json says so."""
    from test_serialio import PtyConsole
    from test_target import PASSWORD, FakeTarget

    con = PtyConsole()
    fake = FakeTarget(tmp_path)
    fake.start(con.master)
    con.release_slave()
    try:
        res = run_session(RunOptions(serial_url=con.path, login="root", password=PASSWORD,
                                     command="kexec-go", timeout=1.0, login_timeout=10,
                                     overall_timeout=60, out_dir=tmp_path / "out",
                                     command_line=["test"]))
    finally:
        fake.stop()
        con.close()
    env = json.loads((res.bundle_dir / "environment.json").read_text())
    assert res.verdict == "completed"
    assert env["target_agent"] == "installed" and "push" not in env


def test_payload_options_without_push_are_refused():
    proc = subprocess.run([sys.executable, "-m", "kexectest", "run", "--serial", "loop://",
                           "--hang-at", "e820"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == Exit.USAGE
    assert "--hang-at: payload options go to a pushed agent (--push)" in proc.stderr
