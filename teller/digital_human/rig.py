"""The rig: everything about a portrait that is computed once and shared by its avatars.

Building it costs a face mesh run (or a cache read) and a fraction of a second of
warping; it is read-only afterwards, so any number of renderers, in any threads,
draw from one rig.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import eyes, mouth
from .head import HeadWarp, head_warp
from .portrait import Portrait, load_portrait
from .sprites import SpritePool


@dataclass(frozen=True)
class AvatarRig:
    portrait: Portrait
    mouth: SpritePool
    right_eye: SpritePool  # the person's right: the left one on screen
    left_eye: SpritePool
    head: HeadWarp

    @property
    def base(self) -> np.ndarray:
        return self.portrait.image

    @property
    def width(self) -> int:
        return self.portrait.width

    @property
    def height(self) -> int:
        return self.portrait.height

    @property
    def face_height(self) -> float:
        return self.portrait.face_height


def build_rig(portrait: Portrait, mouth_levels: int = mouth.LEVELS, eye_levels: int = eyes.LEVELS) -> AvatarRig:
    image, landmarks, face = portrait.image, portrait.landmarks, portrait.face_height
    mouth_pool = mouth.mouth_sprites(image, landmarks, face, mouth_levels)
    right = eyes.eye_sprites(image, landmarks, eyes.RIGHT_EYE, eye_levels)
    left = eyes.eye_sprites(image, landmarks, eyes.LEFT_EYE, eye_levels)
    boxes = tuple((p.x, p.y, p.width, p.height) for p in (mouth_pool, right, left))
    head = head_warp(portrait.width, portrait.height, landmarks, face, keep_inside=boxes)
    return AvatarRig(portrait=portrait, mouth=mouth_pool, right_eye=right, left_eye=left, head=head)


def load_rig(portrait: str | Path | None = None, width: int = 640, height: int = 480) -> AvatarRig:
    """The rig of the portrait at `portrait` (None or "": the shipped default avatar).

    Blocking (face mesh, warps): call it from a worker thread."""
    return build_rig(load_portrait(portrait or None, width, height))
