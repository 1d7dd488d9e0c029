"""Pre-drawn patches of the portrait, pasted whole into a frame: no per-frame drawing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpritePool:
    """Same-size patches at (x, y) of the frame, one per level; level 0 is the photo itself."""

    x: int
    y: int
    sprites: np.ndarray  # (levels, h, w, 3) uint8

    @property
    def levels(self) -> int:
        return int(self.sprites.shape[0])

    @property
    def width(self) -> int:
        return int(self.sprites.shape[2])

    @property
    def height(self) -> int:
        return int(self.sprites.shape[1])

    def index(self, amount: float) -> int:
        """The level for an amount 0..1."""
        return round(min(1.0, max(0.0, amount)) * (self.levels - 1))

    def paste(self, level: int, frame: np.ndarray, x0: int = 0, y0: int = 0) -> None:
        """Write sprite `level` into `frame`, whose top-left is (x0, y0) of the full frame."""
        x, y = self.x - x0, self.y - y0
        frame[y : y + self.height, x : x + self.width] = self.sprites[level]
