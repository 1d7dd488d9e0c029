"""Face comparison for identity verification: the customer's face frame against the
ID-document frame, through the bank's service, a local embedding model, or nobody.

A comparison never raises for the failures a deployment meets (a slow or broken
service, a frame without a face): it returns a Comparison the agent desk can show, and
the agent decides. The request and reply of the bank's service are in
docs/face_compare.md.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import json
import logging
import math
import secrets
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from teller.config import ConfigError, IdentitySettings

log = logging.getLogger("teller.identity")

# A decision and a score fit in a few hundred bytes; anything near this is not a reply.
MAX_REPLY_BYTES = 64 * 1024
# Share of the face box added on each side of the crop the embedding model sees.
CROP_MARGIN = 0.2
DEFAULT_INPUT_SIZE = 112


@dataclass(frozen=True)
class Comparison:
    backend: str
    outcome: str
    score: float | None
    threshold: float | None
    code: str | None
    message: str
    ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "outcome": self.outcome,
            "score": None if self.score is None else round(self.score, 4),
            "threshold": None if self.threshold is None else round(self.threshold, 4),
            "code": self.code,
            "message": self.message,
            "ms": round(self.ms, 1),
        }


class FaceComparer(ABC):
    """One per process, shared by every call: compare() may run for several calls at once."""

    name: ClassVar[str]

    @abstractmethod
    async def compare(self, face_jpeg: bytes, id_jpeg: bytes, *, session_id: str, call_id: str) -> Comparison: ...

    async def close(self) -> None:
        return None

    def _decided(self, score: float | None, threshold: float | None, match: bool, started: float) -> Comparison:
        verdict = "The faces match" if match else "The faces do not match"
        if score is not None and threshold is not None:
            message = f"{verdict} (score {score:.2f}, threshold {threshold:.2f})."
        elif score is not None:
            message = f"{verdict} (score {score:.2f})."
        else:
            message = f"{verdict} (the service gave no score)."
        outcome = "match" if match else "mismatch"
        return Comparison(self.name, outcome, score, threshold, None, message, _ms(started))

    def _error(self, code: str, message: str, started: float) -> Comparison:
        return Comparison(self.name, "error", None, None, code, message, _ms(started))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class NoComparer(FaceComparer):
    """Neither a service nor a model is configured: the agent compares by eye."""

    name = "none"

    async def compare(self, face_jpeg: bytes, id_jpeg: bytes, *, session_id: str, call_id: str) -> Comparison:
        return Comparison(self.name, "manual_check_required", None, None, None,
                          "No face comparison is configured: manual check required.", 0.0)


class _BadReply(ValueError):
    pass


class HttpFaceComparer(FaceComparer):
    """The bank's face-verification service: one POST per comparison, no retries (the
    agent can press compare again, and a retry would send the images twice)."""

    name = "http"

    def __init__(self, settings: IdentitySettings) -> None:
        self._url = settings.compare_url
        self._auth = settings.compare_auth
        self._timeout = aiohttp.ClientTimeout(total=settings.compare_timeout_s)
        self._timeout_s = settings.compare_timeout_s
        self._threshold = settings.compare_threshold
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def compare(self, face_jpeg: bytes, id_jpeg: bytes, *, session_id: str, call_id: str) -> Comparison:
        started = time.perf_counter()
        request_id = secrets.token_hex(16)
        body = {
            "request_id": request_id,
            "session_id": session_id,
            "call_id": call_id,
            "face_image": base64.b64encode(face_jpeg).decode("ascii"),
            "id_image": base64.b64encode(id_jpeg).decode("ascii"),
        }
        headers = {"Authorization": self._auth} if self._auth else {}
        try:
            # Redirects are not followed: the images go to the configured URL only.
            async with self._client().post(self._url, json=body, headers=headers, allow_redirects=False) as response:
                status = response.status
                raw = await _read_capped(response)
        except TimeoutError:
            log.warning("face compare timed out after %.1f s (call %s, request %s)", self._timeout_s, call_id, request_id)
            return self._error("compare_timeout",
                               f"The face-verification service did not answer within {self._timeout_s:g} s.", started)
        except _BadReply as exc:
            log.warning("face compare: bad reply (call %s, request %s): %s", call_id, request_id, exc)
            return self._error("compare_bad_reply", "The face-verification service sent a reply Teller cannot read.", started)
        except aiohttp.ClientPayloadError as exc:
            log.warning("face compare: broken reply body (call %s, request %s): %s", call_id, request_id, exc)
            return self._error("compare_bad_reply", "The face-verification service sent a reply Teller cannot read.", started)
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("face compare: service unreachable (call %s, request %s): %r", call_id, request_id, exc)
            return self._error("compare_unavailable", "The face-verification service cannot be reached.", started)
        if not 200 <= status < 300:
            log.warning("face compare: HTTP %d (call %s, request %s): %r", status, call_id, request_id, raw[:200])
            return self._error("compare_refused",
                               f"The face-verification service refused the request (HTTP {status}).", started)
        try:
            match, score, threshold = self._decision(raw, request_id)
        except _BadReply as exc:
            log.warning("face compare: bad reply (call %s, request %s): %s", call_id, request_id, exc)
            return self._error("compare_bad_reply", "The face-verification service sent a reply Teller cannot read.", started)
        log.info("face compare: %s score=%s (call %s, request %s)", "match" if match else "mismatch", score, call_id, request_id)
        return self._decided(score, threshold, match, started)

    def _decision(self, raw: bytes, request_id: str) -> tuple[bool, float | None, float | None]:
        """(match, score, threshold) from the reply; a threshold is reported only where
        the service sent one or where Teller made the decision with its own."""
        try:
            reply = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _BadReply(f"not JSON: {exc}") from None
        if not isinstance(reply, dict):
            raise _BadReply("not a JSON object")
        if "request_id" in reply and reply["request_id"] != request_id:
            raise _BadReply(f"request_id {reply['request_id']!r} is not ours")
        score = _unit(reply, "score")
        threshold = _unit(reply, "threshold")
        match = reply.get("match")
        if match is not None and not isinstance(match, bool):
            raise _BadReply("match is not a boolean")
        if match is None:
            if score is None:
                raise _BadReply("neither match nor score")
            threshold = self._threshold if threshold is None else threshold
            match = score >= threshold
        return match, score, threshold


def _unit(reply: dict[str, Any], key: str) -> float | None:
    value = reply.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadReply(f"{key} is not a number")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise _BadReply(f"{key} {value} is outside 0..1")
    return value


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    if response.content_length is not None and response.content_length > MAX_REPLY_BYTES:
        raise _BadReply(f"reply of {response.content_length} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise _BadReply(f"reply over {MAX_REPLY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class LocalEmbeddingComparer(FaceComparer):
    """An ONNX face-embedding model (an ArcFace-style model: one aligned face crop in,
    one vector out) on this process's CPU. Decoding, detection and inference all run in
    a worker thread; one lock serialises them because neither the MediaPipe detector nor
    the onnxruntime session may be used by two threads at once."""

    name = "local"

    def __init__(self, settings: IdentitySettings) -> None:
        self._threshold = settings.embedding_threshold
        self._lock = threading.Lock()
        self._session, self._input, self._size = _load_model(settings.embedding_model)
        self._detector = _load_detector()

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._detector is not None:
                    self._detector.close()
                    self._detector = None

        await asyncio.to_thread(close)

    async def compare(self, face_jpeg: bytes, id_jpeg: bytes, *, session_id: str, call_id: str) -> Comparison:
        started = time.perf_counter()
        try:
            score = await asyncio.to_thread(self._score, face_jpeg, id_jpeg)
        except _NoFace as exc:
            log.info("face compare: %s (call %s)", exc, call_id)
            return self._error("compare_no_face", str(exc), started)
        except _ModelFailed as exc:
            log.error("face compare: the embedding model failed (call %s): %s", call_id, exc)
            return self._error("compare_unavailable", "The local face model failed.", started)
        match = score >= self._threshold
        log.info("face compare: %s score=%.3f (call %s)", "match" if match else "mismatch", score, call_id)
        return self._decided(score, self._threshold, match, started)

    def _score(self, face_jpeg: bytes, id_jpeg: bytes) -> float:
        face = _decode(face_jpeg, "customer's face frame")
        card = _decode(id_jpeg, "ID document frame")
        with self._lock:
            if self._detector is None:
                raise _ModelFailed("the comparer is closed")
            face_crop = self._crop(face, "customer's face frame")
            card_crop = self._crop(card, "ID document frame")
            a = self._embed(face_crop)
            b = self._embed(card_crop)
        norms = float(np.linalg.norm(a) * np.linalg.norm(b))
        if norms == 0.0 or not math.isfinite(norms):
            return 0.0
        return min(1.0, max(0.0, float(np.dot(a, b)) / norms))

    def _crop(self, rgb: np.ndarray, what: str) -> np.ndarray:
        """The largest face, with a margin, resized to the model's input: the photo on an
        ID card is small, so the full-range detector is used."""
        detections = self._detector.process(rgb).detections or []
        if not detections:
            raise _NoFace(f"No face found in the {what}.")
        height, width = rgb.shape[:2]
        box = max((d.location_data.relative_bounding_box for d in detections), key=lambda b: b.width * b.height)
        x0, y0 = box.xmin * width, box.ymin * height
        w, h = box.width * width, box.height * height
        side = max(w, h) * (1 + 2 * CROP_MARGIN)
        cx, cy = x0 + w / 2, y0 + h / 2
        left, top = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
        right, bottom = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
        if right - left < 2 or bottom - top < 2:
            raise _NoFace(f"No face found in the {what}.")
        from PIL import Image

        crop = Image.fromarray(rgb[top:bottom, left:right]).resize(self._size, Image.Resampling.BILINEAR)
        return np.asarray(crop)

    def _embed(self, rgb: np.ndarray) -> np.ndarray:
        tensor = ((rgb.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[np.newaxis]
        try:
            outputs = self._session.run(None, {self._input: np.ascontiguousarray(tensor)})
        except Exception as exc:  # onnxruntime raises its own types for shape and type errors
            raise _ModelFailed(str(exc)) from exc
        return np.asarray(outputs[0], dtype=np.float64).reshape(-1)


class _NoFace(Exception):
    pass


class _ModelFailed(Exception):
    pass


def _decode(jpeg: bytes, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise _NoFace(f"The {what} cannot be read as an image.") from None


def _load_model(path: str) -> tuple[Any, str, tuple[int, int]]:
    """(session, input name, (width, height)); every reason it cannot load is a
    ConfigError naming identity.embedding_model, so `teller serve` stops at start."""
    if not Path(path).is_file():
        raise ConfigError(f"identity.embedding_model: no such file: {path}")
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("identity.embedding_model is set but onnxruntime is not installed "
                          "(pip install onnxruntime)") from None
    options = onnxruntime.SessionOptions()
    # Comparisons are rare; the media plane needs the other cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's exceptions derive from Exception only
        raise ConfigError(f"identity.embedding_model: {path} is not a usable ONNX model: {exc}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ConfigError(f"identity.embedding_model: {path} must take one NCHW image input")
    _, channels, height, width = inputs[0].shape
    if isinstance(channels, int) and channels != 3:
        raise ConfigError(f"identity.embedding_model: {path} takes {channels} channels, not 3 (RGB)")
    size = (width if isinstance(width, int) and width > 0 else DEFAULT_INPUT_SIZE,
            height if isinstance(height, int) and height > 0 else DEFAULT_INPUT_SIZE)
    return session, inputs[0].name, size


def _load_detector() -> Any:
    try:
        import mediapipe as mp
    except ImportError:
        raise ConfigError("identity.embedding_model is set but MediaPipe is not installed "
                          "(pip install 'teller[avatar]')") from None
    return mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)


def _check_url(url: str) -> None:
    """Images of customers leave the process over HTTPS only; plain HTTP is allowed to a
    loopback address (a sidecar on the same host, or a test)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"identity.compare_url: not an http(s) URL: {url!r}")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ConfigError(f"identity.compare_url: use https:// (plain http is allowed to loopback only): {url!r}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_comparer(settings: IdentitySettings) -> FaceComparer:
    """The bank's service when compare_url is set, else the local model when
    embedding_model is set, else nobody. Raises ConfigError for a setting that cannot work."""
    if settings.compare_url:
        _check_url(settings.compare_url)
        if not settings.compare_timeout_s > 0:
            raise ConfigError("identity.compare_timeout_s must be above 0")
        if not 0.0 <= settings.compare_threshold <= 1.0:
            raise ConfigError("identity.compare_threshold must be within 0..1")
        return HttpFaceComparer(settings)
    if settings.embedding_model:
        if not 0.0 <= settings.embedding_threshold <= 1.0:
            raise ConfigError("identity.embedding_threshold must be within 0..1")
        return LocalEmbeddingComparer(settings)
    return NoComparer()


__all__ = [
    "Comparison",
    "FaceComparer",
    "HttpFaceComparer",
    "LocalEmbeddingComparer",
    "NoComparer",
    "make_comparer",
]
