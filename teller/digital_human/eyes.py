"""Blink sprites: the upper eyelid's skin stretched down over the eye, drawn once per portrait.

Column by column across the eye, the skin between the brow and the lid's edge is
stretched down so that the edge (with its lashes) reaches the wanted height; below it
the eye shows as it is. The lid's edge is a fold, so it is anti-aliased by coverage
rather than by the warp. Closed: the edge lies on the lower lid, as in a real blink.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .sprites import SpritePool

LEVELS = 8


@dataclass(frozen=True)
class EyeShape:
    corners: tuple[int, int]
    upper: list[int]
    lower: list[int]
    brow: list[int]  # the brow's lower edge


RIGHT_EYE = EyeShape(corners=(33, 133), upper=[246, 161, 160, 159, 158, 157, 173],
                     lower=[7, 163, 144, 145, 153, 154, 155], brow=[46, 53, 52, 65, 55])
LEFT_EYE = EyeShape(corners=(263, 362), upper=[466, 388, 387, 386, 385, 384, 398],
                    lower=[249, 390, 373, 374, 380, 381, 382], brow=[276, 283, 282, 295, 285])
LASHES = 0.08  # of the eye's width: the band above the lid's edge that moves unstretched
LASH_SHADE = 0.18  # the closed lid's edge is a little darker: lashes meeting


def eye_sprites(image: np.ndarray, landmarks: np.ndarray, shape: EyeShape, levels: int = LEVELS) -> SpritePool:
    """Sprites for `levels` closures of one eye; level 0 is the photo as it is."""
    h, w = image.shape[:2]
    pts = landmarks[:, :2]
    corners = pts[list(shape.corners)]
    eye_w = float(abs(corners[1, 0] - corners[0, 0]))
    brow = pts[shape.brow]
    x0 = int(max(0, np.floor(corners[:, 0].min() - 0.15 * eye_w)))
    x1 = int(min(w, np.ceil(corners[:, 0].max() + 0.15 * eye_w)))
    y0 = int(max(0, np.floor(brow[:, 1].min())))
    y1 = int(min(h, np.ceil(pts[shape.lower, 1].max() + 0.25 * eye_w)))
    roi = image[y0:y1, x0:x1]
    local = pts - (x0, y0)
    xs = np.arange(x1 - x0, dtype=np.float32)
    outline = [shape.corners[0], *shape.upper, shape.corners[1]]
    upper = _line(local[outline], xs)
    lower = np.maximum(_line(local[[shape.corners[0], *shape.lower, shape.corners[1]]], xs), upper)
    inside = (xs > local[list(shape.corners), 0].min()) & (xs < local[list(shape.corners), 0].max())
    # The skin that stretches starts a little below the brow, so the brow stays put.
    top = _line(local[shape.brow], xs)
    top = top + 0.3 * np.maximum(upper - top, 0)
    sprites = [roi.copy()]
    for level in range(1, levels):
        sprites.append(_close(roi, upper, lower, top, inside, LASHES * eye_w, level / (levels - 1)))
    return SpritePool(x=x0, y=y0, sprites=np.stack(sprites))


def _line(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    order = np.argsort(points[:, 0])
    return np.interp(xs, points[order, 0], points[order, 1]).astype(np.float32)


def _close(roi: np.ndarray, upper: np.ndarray, lower: np.ndarray, top: np.ndarray,
           inside: np.ndarray, lash_width: float, closure: float) -> np.ndarray:
    h, w = roi.shape[:2]
    rows = np.arange(h, dtype=np.float32)[:, None]
    edge = upper + closure * (lower - upper)  # where the lid's edge is drawn
    lash = np.minimum(lash_width, np.maximum(upper - top, 0) / 2)
    stretch = (upper - lash - top) / np.maximum(edge - lash - top, 1.0)
    # dst -> src: the lid's skin (brow to lashes) stretches, the lashes move down as they
    # are; below the edge the lid carries on (seen only in the edge's anti-aliased row).
    lid_y = np.where(rows <= edge - lash, top + (rows - top) * stretch, upper + (rows - edge))
    lid_y = np.where(rows < top, rows, lid_y)
    map_y = np.where(inside[None, :], lid_y, rows).astype(np.float32)
    map_x = np.broadcast_to(np.arange(w, dtype=np.float32), (h, w)).copy()
    lid = cv2.remap(roi, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    # Stretched skin shows the lashes and crease above it as streaks: soften it across.
    skin = ((rows >= top[None, :]) & (rows < (edge - lash)[None, :]) & inside[None, :]).astype(np.float32)
    skin = cv2.GaussianBlur(skin, (0, 0), 1.0) * min(1.0, 1.5 * closure)
    smooth = cv2.GaussianBlur(lid, (0, 0), sigmaX=max(1.0, 0.6 * lash_width), sigmaY=0.5)
    lid += (smooth - lid) * skin[..., None]
    cover = np.clip(edge[None, :] - rows + 0.5, 0, 1) * inside[None, :]
    near_edge = np.clip(1 - np.abs(rows - edge[None, :] + 1.0) / 2.0, 0, 1) * inside[None, :]
    lid *= (1 - LASH_SHADE * closure * near_edge)[..., None]
    out = lid * cover[..., None] + roi.astype(np.float32) * (1 - cover[..., None])
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
