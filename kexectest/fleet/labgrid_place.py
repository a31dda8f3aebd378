"""labgrid places as sweep machines: acquire through labgrid's own client library, release always.

The coordinator's lock is what lets several sweeps (on several hosts) share one
lab: a place taken by someone else is one clear line for that machine, and the
sweep goes on.  labgrid is an optional extra; it is imported only here, and
only when a lab file has a labgrid machine.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from contextlib import contextmanager
from typing import Iterator

from ..errors import Exit, KexectestError
from .labfile import Machine
from .power import PowerResult


def _import():
    try:
        from labgrid.remote import client
        from labgrid.remote.generated import labgrid_coordinator_pb2
    except ImportError:
        raise KexectestError("labgrid is not installed: pip install 'kexectest[labgrid]'",
                             Exit.MISSING_TOOL) from None
    return client, labgrid_coordinator_pb2


def serial_url(resource) -> str:
    """A pyserial URL for a labgrid NetworkSerialPort (ser2net raw or telnet/RFC 2217)."""
    args = resource.args
    host, port = args.get("host"), args.get("port")
    if not host or not port:
        raise KexectestError(f"NetworkSerialPort without host/port: {dict(args)}", Exit.SERIAL)
    scheme = "socket" if args.get("protocol", "rfc2217") == "raw" else "rfc2217"
    return f"{scheme}://{host}:{port}"


class AcquiredPlace:
    """One acquired place: its serial URL and, when it has one, its power port."""

    def __init__(self, session, place, loop, machine: Machine):
        self.session, self.place, self.loop, self.machine = session, place, loop, machine
        self.name = place.name
        resources = session.get_target_resources(place)
        self.resources = {cls: res for (_, cls), res in resources.items()}
        if "NetworkSerialPort" not in self.resources:
            raise KexectestError(f"machine {machine.name!r}: labgrid place {self.name} has no "
                                 f"NetworkSerialPort", Exit.CONFIG)
        self.serial_url = serial_url(self.resources["NetworkSerialPort"])
        self.has_power = "NetworkPowerPort" in self.resources

    def cycle(self) -> list[PowerResult]:
        """Power-cycle through labgrid's power driver for this place."""
        import time

        t0 = time.monotonic()
        try:
            target = self.session._get_target(self.place)
            drv = self.session._get_driver_or_new(target, "NetworkPowerDriver")
            drv.cycle()
            return [PowerResult("cycle", f"labgrid NetworkPowerDriver {self.name}", True, 0,
                                time.monotonic() - t0, "")]
        except Exception as exc:  # the PDU's failure is this machine's, not the sweep's
            return [PowerResult("cycle", f"labgrid NetworkPowerDriver {self.name}", False, 1,
                                time.monotonic() - t0, str(exc))]


def _choose(session, m: Machine):
    lg = m.labgrid
    if lg.place:
        place = session.places.get(lg.place)
        if place is None:
            raise KexectestError(f"machine {m.name!r}: labgrid place {lg.place!r} does not exist "
                                 f"on {lg.coordinator}", Exit.CONFIG)
        return [place]
    found = [p for p in session.places.values()
             if all(p.tags.get(k) == v for k, v in lg.tags.items())]
    if not found:
        raise KexectestError(f"machine {m.name!r}: no labgrid place with tags {lg.tags} on "
                             f"{lg.coordinator}", Exit.CONFIG)
    return sorted(found, key=lambda p: p.name)


class _LoopThread:
    """One event loop in one thread for every labgrid session of this process: grpc.aio does not
    take several loops in several threads at once (sessions then lose their coordinator stream)."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def run(cls, coro, timeout: float = 60.0):
        with cls._lock:
            if cls._loop is None:
                cls._loop = asyncio.new_event_loop()
                threading.Thread(target=cls._loop.run_forever, name="labgrid-loop",
                                 daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coro, cls._loop).result(timeout)


_SESSIONS: dict[str, object] = {}
_SESSIONS_LOCK = threading.Lock()


@contextmanager
def acquired(m: Machine) -> Iterator[AcquiredPlace]:
    """Acquire m's place (or the first free place with its tags); release it whatever happens."""
    client, pb2 = _import()
    from labgrid.util.proxy import proxymanager

    async def start():
        session = client.ClientSession(
            proxymanager.get_grpc_address(m.labgrid.coordinator, default_port=20408),
            asyncio.get_running_loop(),
            args=argparse.Namespace(allow_unmatched=False, kick=False))
        await session.start()
        return session

    async def stop(session):
        await session.stop()
        await session.close()

    async def acquire(session, name):
        await session.stub.AcquirePlace(pb2.AcquirePlaceRequest(placename=name))
        await session.sync_with_coordinator()

    async def release(session, name):
        await session.stub.ReleasePlace(pb2.ReleasePlaceRequest(placename=name))

    try:
        with _SESSIONS_LOCK:  # one session per coordinator: the coordinator keys sessions by
            key = m.labgrid.coordinator  # TCP peer, which gRPC shares across channels
            if key not in _SESSIONS:
                _SESSIONS[key] = _LoopThread.run(start())
            session = _SESSIONS[key]
    except Exception as exc:
        raise KexectestError(f"machine {m.name!r}: cannot reach labgrid coordinator "
                             f"{m.labgrid.coordinator}: {exc}", Exit.SERIAL) from None
    try:
        got, why = None, []
        for place in _choose(session, m):
            if place.acquired:
                why.append(f"{place.name} is taken by {place.acquired}")
                continue
            try:
                _LoopThread.run(acquire(session, place.name))
                got = session.places[place.name]
                break
            except Exception as exc:  # lost the race to another sweep: try the next one
                detail = exc.details() if callable(getattr(exc, "details", None)) else exc
                why.append(f"{place.name}: {detail}")
        if got is None:
            raise KexectestError(f"machine {m.name!r}: labgrid place not acquired: "
                                 f"{'; '.join(why)}", Exit.SERIAL)
        try:
            yield AcquiredPlace(session, got, None, m)
        finally:
            try:
                _LoopThread.run(release(session, got.name))
            except Exception:
                pass  # nothing more to do here; `labgrid-client release` frees it
    finally:
        pass  # the shared session lives as long as the process
