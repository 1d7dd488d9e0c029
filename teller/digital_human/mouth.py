"""Mouth sprites: the portrait's jaw dropped by increasing amounts, drawn once per portrait.

Opening is a backward-map warp of a region around the mouth and chin, column by
column: the lower lip and chin move down, the upper lip rises a little, nothing above
the nose base moves, and the neck below the chin takes up the difference. The gap
between the lips becomes a dark mouth; the photo's own teeth (if it smiles) stay under
the upper lip, and a closed-mouth photo gets a hint of upper teeth instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .sprites import SpritePool

UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
# The lower face oval, from the left jaw angle round the chin to the right one.
JAW = [172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397]
NOSE_BASE = 2

LEVELS = 16
MAX_DROP = 0.09  # of the face height, at the widest opening
LIP_RAISE = 0.15  # the upper lip rises this share of the drop
NECK = 0.3  # below the chin, the warp fades out over this share of the face height
CAVITY_BGR = np.array([34, 36, 80], np.float32)
TEETH_BGR = np.array([205, 212, 218], np.float32)


@dataclass(frozen=True)
class _Column:
    """Per-column lines of the mouth region (ROI pixels, one entry per column)."""

    upper: np.ndarray  # inner edge of the upper lip
    lower: np.ndarray  # inner edge of the lower lip
    chin: np.ndarray
    lip: np.ndarray  # 0..1: how much of the drop the lips' gap takes (0 past the corners)
    jaw: np.ndarray  # 0..1: how much of the drop the chin takes


def mouth_sprites(image: np.ndarray, landmarks: np.ndarray, face_height: float, levels: int = LEVELS) -> SpritePool:
    """Sprites for `levels` openings; level 0 is the photo as it is."""
    h, w = image.shape[:2]
    pts = landmarks[:, :2]
    jaw_pts = pts[JAW]
    drop_max = MAX_DROP * face_height
    x0 = int(max(0, np.floor(jaw_pts[:, 0].min() - 0.05 * face_height)))
    x1 = int(min(w, np.ceil(jaw_pts[:, 0].max() + 0.05 * face_height)))
    y0 = int(max(0, np.floor(pts[NOSE_BASE, 1])))
    y1 = int(min(h, np.ceil(jaw_pts[:, 1].max() + NECK * face_height + drop_max)))
    roi = image[y0:y1, x0:x1]
    cols = _columns(pts - (x0, y0), x1 - x0, face_height)
    top = pts[NOSE_BASE, 1] - y0
    sprites = [roi.copy()]
    for level in range(1, levels):
        drop = drop_max * level / (levels - 1)
        sprites.append(_open(roi, cols, top, drop, face_height))
    return SpritePool(x=x0, y=y0, sprites=np.stack(sprites))


def _columns(pts: np.ndarray, width: int, face_height: float) -> _Column:
    xs = np.arange(width, dtype=np.float32)
    upper = _line(pts[UPPER_INNER], xs)
    lower = np.maximum(_line(pts[LOWER_INNER], xs), upper)
    chin = np.maximum(_line(pts[JAW], xs), lower + 0.12 * face_height)
    left, right = pts[78, 0], pts[308, 0]
    u = (xs - (left + right) / 2) / max(1.0, (right - left) / 2)
    lip = np.sqrt(np.clip(1 - u * u, 0, 1))
    jaw_half = (pts[JAW, 0].max() - pts[JAW, 0].min()) / 2
    v = np.abs(xs - (left + right) / 2) / max(1.0, jaw_half)
    jaw = np.where(v < 0.55, 1.0, np.cos(np.clip((v - 0.55) / 0.45, 0, 1) * np.pi / 2) ** 2)
    lip = cv2.GaussianBlur(lip.reshape(1, -1).astype(np.float32), (0, 0), 1.2).ravel()
    return _Column(upper=upper, lower=lower, chin=chin, lip=lip, jaw=np.maximum(jaw, lip).astype(np.float32))


def _line(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    order = np.argsort(points[:, 0])
    return np.interp(xs, points[order, 0], points[order, 1]).astype(np.float32)


def _open(roi: np.ndarray, cols: _Column, top: float, drop: float, face_height: float) -> np.ndarray:
    h, w = roi.shape[:2]
    rows = np.arange(h, dtype=np.float32)
    map_y = np.empty((h, w), np.float32)
    neck = NECK * face_height
    eps = 1e-3
    for x in range(w):
        lip, jaw = drop * cols.lip[x], drop * cols.jaw[x]
        up, lo, chin = cols.upper[x], cols.lower[x], cols.chin[x]
        raised = up - LIP_RAISE * lip
        # dst -> src: the gap keeps the photo's own mouth (teeth) under the upper lip and
        # stretches the lower lip's edge below it (painted over as the cavity).
        dst = [0.0, top, raised, raised + (lo - up) + eps, lo + lip + 2 * eps, chin + jaw + 3 * eps, chin + neck, h]
        src = [0.0, top, up, lo, lo, chin, chin + neck, h]
        map_y[:, x] = np.interp(rows, np.minimum(dst, h), np.minimum(src, h))
    map_x = np.broadcast_to(np.arange(w, dtype=np.float32), (h, w)).copy()
    opened = cv2.remap(roi, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _paint_cavity(opened, cols, drop, face_height)


def _paint_cavity(opened: np.ndarray, cols: _Column, drop: float, face_height: float) -> np.ndarray:
    """Darken the gap between the raised upper lip and the dropped lower lip, anti-aliased."""
    h, w = opened.shape[:2]
    xs = np.nonzero(cols.lip > 0.02)[0]
    if len(xs) < 2:
        return opened
    lip = drop * cols.lip[xs]
    gap = cols.lower[xs] - cols.upper[xs]
    top = cols.upper[xs] - LIP_RAISE * lip + gap  # below the photo's own teeth, if any
    bottom = cols.lower[xs] + lip
    ss = 4  # supersampled polygon: a smooth, anti-aliased edge
    poly = np.concatenate([np.stack([xs, top], 1), np.stack([xs, bottom], 1)[::-1]])
    mask = np.zeros((h * ss, w * ss), np.uint8)
    cv2.fillPoly(mask, [np.round((poly + 0.5) * ss - 0.5).astype(np.int32)], 255, cv2.LINE_AA)
    alpha = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.6 + 0.004 * face_height)

    # Darker towards the middle of the opening: it reads as depth.
    rows = np.arange(h, dtype=np.float32)[:, None]
    top_at = np.interp(np.arange(w), xs, top).astype(np.float32)[None, :]
    half = np.maximum(np.interp(np.arange(w), xs, (bottom - top) / 2), 1.0).astype(np.float32)[None, :]
    depth = 1.0 - 0.5 * np.clip(1 - np.abs(rows - top_at - half) / half, 0, 1)
    colour = CAVITY_BGR * depth[..., None]

    # A hint of upper teeth where the photo shows none.
    teeth_w = np.clip(1 - gap / (0.02 * face_height), 0, 1) * np.clip(cols.lip[xs] * 1.6 - 0.4, 0, 1)
    teeth_h = np.minimum(0.028 * face_height, 0.3 * (bottom - top))
    below_top = rows - top_at
    band = np.clip(np.interp(np.arange(w), xs, teeth_h)[None, :] - below_top, 0, 1.5) / 1.5
    band *= np.interp(np.arange(w), xs, teeth_w, left=0, right=0)[None, :] * 0.75
    colour = colour * (1 - band[..., None]) + TEETH_BGR[None, None, :] * band[..., None] * 0.85

    out = opened.astype(np.float32) * (1 - alpha[..., None]) + colour * alpha[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
