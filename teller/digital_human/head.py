"""Head motion: a small rigid motion of the head, faded out through the hair and the neck.

A soft mask is 1 over the face (so eyes, nose and mouth move as one piece) and falls
to 0 through the hair and down the neck; the background outside the mask's box is never
touched. The grids are made once: per frame, one affine transform of the mask-weighted
coordinates gives the backward map, and one remap of the head's box draws the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# The face oval, round from the forehead.
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
FOREHEAD, CHIN = 10, 152
HAIR = 0.45  # the mask reaches this share of the face height above the forehead
WIDEN = 1.3  # and this much wider than the face oval, for hair and ears
NECK = 0.45  # it fades to nothing this far below the chin
SOFTNESS = 0.08  # the blur of its edge, in face heights
PIVOT = 0.3  # the head turns about a point this far below the chin (the neck)


@dataclass(frozen=True)
class HeadPose:
    """A rigid motion of the head: pixels, degrees (clockwise on screen), scale factor."""

    dx: float = 0.0
    dy: float = 0.0
    roll: float = 0.0
    scale: float = 1.0

    @property
    def still(self) -> bool:
        return self.dx == 0.0 and self.dy == 0.0 and self.roll == 0.0 and self.scale == 1.0


@dataclass(frozen=True)
class HeadWarp:
    """The head's box in the frame and its precomputed grids (box coordinates)."""

    x: int
    y: int
    grid: np.ndarray  # (h, w, 2) float32: identity map
    weighted: np.ndarray  # (h, w, 3) float32: mask * x, mask * y, mask
    pivot: tuple[float, float]

    @property
    def width(self) -> int:
        return int(self.grid.shape[1])

    @property
    def height(self) -> int:
        return int(self.grid.shape[0])

    @property
    def box(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)

    def affine(self, pose: HeadPose) -> np.ndarray:
        """The 2x3 matrix taking (mask*x, mask*y, mask) to the backward map's displacement.

        The head moves p -> c + s R (p - c) + t; a pixel p of the frame samples
        c + R^-1 (p - c - t) / s, so its displacement is linear in p: M p + b.
        """
        a = math.radians(pose.roll)
        cos, sin = math.cos(a) / pose.scale, math.sin(a) / pose.scale
        inverse = np.array([[cos, sin], [-sin, cos]])
        c = np.array(self.pivot)
        m = inverse - np.eye(2)
        b = c - inverse @ (c + np.array([pose.dx, pose.dy]))
        return np.hstack([m, b[:, None]]).astype(np.float32)

    def draw(self, src: np.ndarray, pose: HeadPose, out: np.ndarray, map_buffer: np.ndarray) -> None:
        """Draw the head box `src` moved by `pose` into `out` (a view of the frame's box)."""
        cv2.transform(self.weighted, self.affine(pose), dst=map_buffer)
        cv2.add(map_buffer, self.grid, dst=map_buffer)
        cv2.remap(src, map_buffer, None, cv2.INTER_LINEAR, dst=out, borderMode=cv2.BORDER_REPLICATE)


def head_warp(width: int, height: int, landmarks: np.ndarray, face_height: float,
              keep_inside: tuple[tuple[int, int, int, int], ...] = ()) -> HeadWarp:
    """The mask and grids for a frame of width x height; `keep_inside` (x, y, w, h) boxes are
    widened into the head's box (sprites are pasted before the head moves)."""
    pts = landmarks[:, :2]
    oval = pts[FACE_OVAL]
    cx = float(oval[:, 0].mean())
    half_w = float(oval[:, 0].max() - oval[:, 0].min()) / 2 * WIDEN
    top = float(pts[FOREHEAD, 1]) - HAIR * face_height
    chin = float(pts[CHIN, 1])
    mask = np.zeros((height, width), np.float32)
    cv2.ellipse(mask, (round(cx * 16), round((top + chin) / 2 * 16)), (round(half_w * 16), round((chin - top) / 2 * 16)),
                0, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
    neck_w = half_w * 0.6
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    below = np.clip(1 - (rows - chin) / (NECK * face_height), 0, 1) * (rows >= chin - 0.2 * face_height)
    mask = np.maximum(mask, below * (np.abs(cols - cx) <= neck_w))
    sigma = SOFTNESS * face_height
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    # Saturate: the whole face (and everything pasted on it) moves as one rigid piece.
    mask = np.clip(mask * 1.25, 0, 1)
    mask[mask < 1 / 512] = 0

    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    for bx, by, bw, bh in keep_inside:
        x0, y0, x1, y1 = min(x0, bx), min(y0, by), max(x1, bx + bw), max(y1, by + bh)
    mask = mask[y0:y1, x0:x1]
    h, w = mask.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    grid = np.dstack([gx, gy])
    weighted = np.dstack([mask * gx, mask * gy, mask])
    pivot = (cx - x0, chin + PIVOT * face_height - y0)
    return HeadWarp(x=x0, y=y0, grid=grid, weighted=weighted, pivot=pivot)
