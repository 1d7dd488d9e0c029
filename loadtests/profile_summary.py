"""Summarise a py-spy raw profile (bench_forward.py --profile) by where CPU goes.

    python loadtests/profile_summary.py WORKDIR/profile-15.txt

Samples of a thread waiting (epoll, a thread-pool queue) are idle and left out; the
rest are grouped into the stages of the forwarding path.
"""

from __future__ import annotations

import collections
import sys

IDLE = ("EpollSelector.select", "_worker (concurrent/futures/thread.py", "Condition.wait", "Thread._bootstrap")

GROUPS = [
    ("receive: socket read and everything after it", "_SelectorDatagramTransport._read_ready "),
    ("  SRTP decrypt", "Session.unprotect "),
    ("  per-track bookkeeping and fan-out", "Publication.on_rtp "),
    ("    DownTrack.write (rewrite + encrypt + send)", "DownTrack.write "),
    ("      SRTP encrypt", "Session.protect "),
    ("      socket send (MediaLeg.send_rtp)", "MediaLeg.send_rtp "),
    ("RTCP handling", "_on_rtcp "),
    ("event loop itself", "BaseEventLoop._run_once "),
]


def main(path: str) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        if any(frames[-1].startswith(i) for i in IDLE):
            continue
        n = int(count)
        busy += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"busy samples: {busy}")
    print("\nby stage (inclusive, % of busy):")
    for label, marker in GROUPS:
        n = sum(v for k, v in inclusive.items() if marker in k)
        print(f"  {100 * n / busy:5.1f}%  {label}")
    print("\nfunctions by own time (% of busy):")
    for frame, n in own.most_common(15):
        print(f"  {100 * n / busy:5.1f}%  {frame}")


if __name__ == "__main__":
    main(sys.argv[1])
