"""A serial line at a real baud rate between the collector and a lab guest's TCP console.

QEMU moves console bytes as fast as the guest takes them; a real 115200-baud line carries 11,520
bytes a second (8N1: ten bits a byte).  This relay listens on a loopback port, connects to the
guest's console and passes bytes each way no faster than that, so a push through it takes the
time it would take on hardware.  Used by bench_lab.py.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time


class PacedLine:
    """`url` is what the collector opens; `close()` ends it.  `sent` counts the bytes that
    went from the collector to the guest, `received` the other way."""

    def __init__(self, guest_port: int, baud: int = 115200):
        self.rate = baud / 10.0
        self.guest_port = guest_port
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.sent = self.received = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        collector, _ = self.server.accept()
        guest = socket.create_connection(("127.0.0.1", self.guest_port))
        for s in (collector, guest):
            s.setblocking(False)
        queues = {collector: bytearray(), guest: bytearray()}  # bytes waiting to go TO it
        budget = {collector: 0.0, guest: 0.0}
        peer = {collector: guest, guest: collector}
        last = time.monotonic()
        sel = selectors.DefaultSelector()
        for s in (collector, guest):
            sel.register(s, selectors.EVENT_READ)
        closing = None  # the side that hung up: what it sent still goes across, then the end
        try:
            while not self._stop.is_set():
                if closing is not None and not queues[peer[closing]]:
                    return
                for key, _ in sel.select(0.001):
                    try:
                        data = key.fileobj.recv(65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        closing = key.fileobj
                        sel.unregister(key.fileobj)
                        continue
                    queues[peer[key.fileobj]] += data
                now = time.monotonic()
                for s in (collector, guest):
                    # a UART: no more than `rate` bytes a second, a 16-byte FIFO of slack
                    budget[s] = min(budget[s] + (now - last) * self.rate, 16.0)
                    n = min(int(budget[s]), len(queues[s]))
                    if n:
                        try:
                            done = s.send(bytes(queues[s][:n]))
                        except BlockingIOError:
                            done = 0
                        del queues[s][:done]
                        budget[s] -= done
                        if s is guest:
                            self.sent += done
                        else:
                            self.received += done
                last = now
        except OSError:
            return
        finally:
            sel.close()
            collector.close()
            guest.close()

    def close(self) -> None:
        self._stop.set()
        self.server.close()
        self.thread.join(5)
