"""What one received UDP datagram costs a Python asyncio process that does nothing with it.

    python loadtests/bench_wakeup.py [--rate 154] [--seconds 10]

A calibration for bench_forward.py: at the packet rate of one 1 Mbps video + Opus
publisher, most of an SFU's fixed cost is the process waking up for each datagram, and
on a virtual machine that wake-up is expensive whatever the process does afterwards.
Prints JSON: the receiver's CPU milliseconds per second and microseconds per datagram.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


class Discard(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: object) -> None:
        pass


async def receive(port: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Discard, local_addr=("127.0.0.1", port))
    print("ready", flush=True)
    await asyncio.sleep(seconds + 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=154.0, help="datagrams per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--receive-on", type=int)
    args = parser.parse_args()
    if args.receive_on:
        asyncio.run(receive(args.receive_on, args.seconds))
        return
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receive-on", str(port), "--seconds", str(args.seconds)],
        stdout=subprocess.PIPE,
    )
    assert receiver.stdout is not None
    receiver.stdout.readline()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = os.urandom(1100)
    start = time.monotonic()
    cpu0 = cpu_seconds(receiver.pid)
    sent = 0
    while (now := time.monotonic()) - start < args.seconds:
        due = start + sent / args.rate
        if due > now:
            time.sleep(due - now)
        sender.sendto(payload, ("127.0.0.1", port))
        sent += 1
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(receiver.pid) - cpu0
    receiver.kill()
    print(json.dumps({
        "datagrams_per_s": args.rate,
        "receiver_cpu_ms_per_s": round(1000 * cpu / elapsed, 2),
        "us_per_datagram": round(1e6 * cpu / sent, 1),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
