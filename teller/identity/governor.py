"""How much of a core the liveness analysis of a process may take.

Every stream's analysis rate is multiplied by one factor; each second the factor shrinks
while analysis used more than its budget and grows back slowly once it uses well under.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

WINDOW_S = 1.0


class Governor:
    """Scales every stream's analysis rate so analysis stays within its share of a core."""

    def __init__(self, budget: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = max(0.05, budget)
        self.factor = 1.0
        self._clock = clock
        self._window_start = clock()
        self._cpu = 0.0
        self.cpu_ms: collections.deque[float] = collections.deque(maxlen=500)
        self.analysed = 0

    def spent(self, cpu_s: float) -> None:
        self.analysed += 1
        self.cpu_ms.append(cpu_s * 1000)
        self._cpu += cpu_s
        now = self._clock()
        wall = now - self._window_start
        if wall < WINDOW_S:
            return
        share = self._cpu / wall
        if share > self.budget:
            self.factor = max(0.05, self.factor * max(0.5, self.budget / share))
        elif share < 0.6 * self.budget:
            self.factor = min(1.0, self.factor * 1.25)
        self._window_start, self._cpu = now, 0.0
