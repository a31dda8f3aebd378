"""A real SSH server on 127.0.0.1 for the ssh tests (asyncssh, in a thread): the system's own
`ssh` client connects to it, and each command runs through /bin/sh as nobody -- never as the
root running the tests, since the commands include the pushed agent's `load --exec`."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import asyncssh

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: a loopback test server


class SshServer:
    """`options` are the ssh client options that reach it (port, no host key checks)."""

    def __init__(self, tmp: Path, env: dict):
        self.tmp, self.env = Path(tmp), env
        self.loop = asyncio.new_event_loop()
        self.commands: list[str] = []
        key = asyncssh.generate_private_key("ssh-ed25519")
        self.key_path = self.tmp / "host_key"
        self.key_path.write_bytes(key.export_private_key())
        ready = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncssh.create_server(
                _Server, "127.0.0.1", 0, server_host_keys=[str(self.key_path)],
                process_factory=self._process, encoding=None))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait(30)
        self.options = ["-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]

    async def _process(self, process: asyncssh.SSHServerProcess) -> None:
        self.commands.append(process.command or "")
        proc = await asyncio.create_subprocess_exec(
            *NOBODY, "/bin/sh", "-c", process.command or "true", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env,
            cwd="/")

        async def feed():
            try:
                while True:
                    data = await process.stdin.read(65536)
                    if not data:
                        break
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            except (asyncssh.Error, ConnectionError, BrokenPipeError):
                pass
            finally:
                proc.stdin.close()

        async def drain(src, dst):
            while True:
                data = await src.read(65536)
                if not data:
                    return
                dst.write(data)
        feeding = asyncio.ensure_future(feed())
        await asyncio.gather(drain(proc.stdout, process.stdout), drain(proc.stderr, process.stderr))
        rc = await proc.wait()
        feeding.cancel()
        process.exit(rc)

    def close(self) -> None:
        async def shutdown():
            self.server.close()
            await self.server.wait_closed()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
