"""Face comparison: the bank's service played by a real HTTP server on loopback, and the
local backend with a real face photo, the real MediaPipe detector and a small ONNX
model built here (random weights: these tests check the plumbing, not face recognition)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from teller.config import ConfigError, IdentitySettings
from teller.identity.compare import (
    Comparison,
    HttpFaceComparer,
    LocalEmbeddingComparer,
    NoComparer,
    make_comparer,
)

AUTH = "Bearer bank-face-service-token"
FACE = b"\xff\xd8face-frame-jpeg\x00\x01\xff\xd9"
ID_DOC = b"\xff\xd8id-document-jpeg\x02\x03\xff\xd9"

Reply = Callable[[dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass
class BankService:
    """The bank's face-verification service: answers with `reply`, keeps what it got."""

    url: str
    reply: Reply | None = None
    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def bank() -> AsyncIterator[BankService]:
    service = BankService(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        service.received.append((dict(request.headers), body))
        assert service.reply is not None
        return await service.reply(body)

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/face/verify", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    service.url = f"http://127.0.0.1:{port}/v1/face/verify"
    yield service
    service.release.set()
    await runner.cleanup()


def answer(payload: Any, status: int = 200) -> Reply:
    async def reply(body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(payload, status=status)
    return reply


def settings(**kwargs: Any) -> IdentitySettings:
    return replace(IdentitySettings(), **kwargs)


async def compare_http(bank: BankService, reply: Reply, **kwargs: Any) -> Comparison:
    bank.reply = reply
    comparer = make_comparer(settings(compare_url=bank.url, compare_auth=AUTH, compare_timeout_s=0.3, **kwargs))
    assert isinstance(comparer, HttpFaceComparer)
    try:
        return await comparer.compare(FACE, ID_DOC, session_id="RM_session", call_id="CL_call")
    finally:
        await comparer.close()


async def test_http_match_sends_images_and_authorization(bank: BankService) -> None:
    result = await compare_http(bank, answer({"match": True, "score": 0.93, "threshold": 0.85}))
    assert (result.backend, result.outcome, result.code) == ("http", "match", None)
    assert result.score == pytest.approx(0.93)
    assert result.threshold == pytest.approx(0.85)
    assert "match" in result.message
    assert result.ms >= 0
    [(headers, body)] = bank.received
    assert headers["Authorization"] == AUTH
    assert headers["Content-Type"].startswith("application/json")
    assert base64.b64decode(body["face_image"], validate=True) == FACE
    assert base64.b64decode(body["id_image"], validate=True) == ID_DOC
    assert (body["session_id"], body["call_id"]) == ("RM_session", "CL_call")
    assert isinstance(body["request_id"], str) and len(body["request_id"]) >= 16
    assert result.to_json() == {"backend": "http", "outcome": "match", "score": 0.93, "threshold": 0.85,
                                "code": None, "message": result.message, "ms": round(result.ms, 1)}


async def test_http_request_ids_differ_and_echo_is_accepted(bank: BankService) -> None:
    async def echo(body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"match": True, "score": 0.9, "request_id": body["request_id"]})

    bank.reply = echo
    comparer = make_comparer(settings(compare_url=bank.url))
    try:
        first = await comparer.compare(FACE, ID_DOC, session_id="s", call_id="c")
        second = await comparer.compare(FACE, ID_DOC, session_id="s", call_id="c")
    finally:
        await comparer.close()
    assert first.outcome == second.outcome == "match"
    assert bank.received[0][1]["request_id"] != bank.received[1][1]["request_id"]
    assert "Authorization" not in bank.received[0][0]


async def test_http_mismatch(bank: BankService) -> None:
    result = await compare_http(bank, answer({"match": False, "score": 0.31}))
    assert (result.outcome, result.code) == ("mismatch", None)
    assert result.score == pytest.approx(0.31)
    assert "do not match" in result.message


@pytest.mark.parametrize(("score", "outcome"), [(0.8, "match"), (0.79, "mismatch")])
async def test_http_score_without_decision_uses_configured_threshold(bank: BankService, score: float, outcome: str) -> None:
    result = await compare_http(bank, answer({"score": score}), compare_threshold=0.8)
    assert result.outcome == outcome
    assert result.threshold == pytest.approx(0.8)


async def test_http_score_without_decision_uses_reply_threshold(bank: BankService) -> None:
    result = await compare_http(bank, answer({"score": 0.7, "threshold": 0.6}), compare_threshold=0.9)
    assert result.outcome == "match"
    assert result.threshold == pytest.approx(0.6)


async def test_http_timeout(bank: BankService) -> None:
    async def slow(body: dict[str, Any]) -> web.StreamResponse:
        await asyncio.wait_for(bank.release.wait(), 10)
        return web.json_response({"match": True, "score": 1.0})

    result = await compare_http(bank, slow)
    assert (result.outcome, result.code) == ("error", "compare_timeout")
    assert result.score is None
    assert "0.3 s" in result.message


@pytest.mark.parametrize("payload", [
    "this is not json",
    "[1, 2]",
    '{"match": "yes", "score": 0.9}',
    '{"score": "0.9"}',
    '{"score": 1.7}',
    '{"score": -0.1}',
    '{"score": NaN}',
    '{"match": true, "score": true}',
    '{"match": true, "score": 0.9, "threshold": 3}',
    '{"threshold": 0.5}',
    '{}',
])
async def test_http_malformed_reply(bank: BankService, payload: str) -> None:
    async def reply(body: dict[str, Any]) -> web.StreamResponse:
        return web.Response(text=payload, content_type="application/json")

    result = await compare_http(bank, reply)
    assert (result.outcome, result.code) == ("error", "compare_bad_reply")
    assert result.score is None


async def test_http_oversized_reply(bank: BankService) -> None:
    async def huge(body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"match": True, "score": 0.9, "padding": "x" * 200_000})

    result = await compare_http(bank, huge)
    assert result.code == "compare_bad_reply"


async def test_http_request_id_mismatch(bank: BankService) -> None:
    result = await compare_http(bank, answer({"match": True, "score": 0.95, "request_id": "someone-else"}))
    assert (result.outcome, result.code) == ("error", "compare_bad_reply")


@pytest.mark.parametrize("status", [500, 401, 302])
async def test_http_non_2xx(bank: BankService, status: int) -> None:
    async def refuse(body: dict[str, Any]) -> web.StreamResponse:
        headers = {"Location": "http://127.0.0.1:9/elsewhere"} if status == 302 else {}
        return web.json_response({"match": True, "score": 0.99}, status=status, headers=headers)

    result = await compare_http(bank, refuse)
    assert (result.outcome, result.code) == ("error", "compare_refused")
    assert f"HTTP {status}" in result.message
    assert len(bank.received) == 1


async def test_http_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    comparer = make_comparer(settings(compare_url=f"http://127.0.0.1:{port}/verify", compare_timeout_s=5))
    try:
        result = await comparer.compare(FACE, ID_DOC, session_id="s", call_id="c")
    finally:
        await comparer.close()
    assert (result.backend, result.outcome, result.code) == ("http", "error", "compare_unavailable")


async def test_no_comparer() -> None:
    comparer = make_comparer(IdentitySettings())
    assert isinstance(comparer, NoComparer)
    result = await comparer.compare(FACE, ID_DOC, session_id="s", call_id="c")
    assert (result.backend, result.outcome, result.score, result.code) == ("none", "manual_check_required", None, None)
    assert result.message == "No face comparison is configured: manual check required."
    await comparer.close()


def test_make_comparer_prefers_http_over_local(tmp_path: Path) -> None:
    model = tmp_path / "missing.onnx"
    assert isinstance(make_comparer(settings(compare_url="https://face.bank.example/verify", embedding_model=str(model))),
                      HttpFaceComparer)


def test_make_comparer_missing_model() -> None:
    with pytest.raises(ConfigError, match=r"identity\.embedding_model.*no such file"):
        make_comparer(settings(embedding_model="/nonexistent/arcface.onnx"))


def test_make_comparer_broken_model(tmp_path: Path) -> None:
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=r"identity\.embedding_model.*not a usable ONNX model"):
        make_comparer(settings(embedding_model=str(model)))


@pytest.mark.parametrize("url", ["http://face.bank.example/verify", "ftp://127.0.0.1/x", "face.bank.example"])
def test_make_comparer_rejects_plain_http_off_host(url: str) -> None:
    with pytest.raises(ConfigError, match=r"identity\.compare_url"):
        make_comparer(settings(compare_url=url))


# The local backend.

@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(7).standard_normal((3 * 112 * 112, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "weights"], ["embedding"])],
        "tiny_embedding",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("model") / "tiny_embedding.onnx"
    onnx.save(model, str(path))
    return path


def jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(out, format="JPEG", quality=92)
    return out.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def id_card(photo: np.ndarray) -> np.ndarray:
    """A 720p frame of an ID card held up: a light card with a 250-pixel-wide portrait."""
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[80:640, 60:1220] = 235
    portrait = np.asarray(Image.fromarray(photo[0:300, 100:330]).resize((250, 326)))
    frame[150:476, 120:370] = portrait
    return frame


@pytest.fixture
async def local(model_path: Path) -> AsyncIterator[LocalEmbeddingComparer]:
    comparer = make_comparer(settings(embedding_model=str(model_path), embedding_threshold=0.5))
    assert isinstance(comparer, LocalEmbeddingComparer)
    yield comparer
    await comparer.close()


async def test_local_same_photo_matches(local: LocalEmbeddingComparer, astronaut: np.ndarray) -> None:
    photo = jpeg(astronaut)
    result = await local.compare(photo, photo, session_id="s", call_id="c")
    assert (result.backend, result.outcome, result.code) == ("local", "match", None)
    assert result.score is not None and result.score > 0.99
    assert result.threshold == pytest.approx(0.5)


async def test_local_different_picture_scores_lower(local: LocalEmbeddingComparer, astronaut: np.ndarray) -> None:
    photo = jpeg(astronaut)
    other = jpeg(astronaut[:, ::-1, ::-1])  # mirrored, red and blue swapped: still a face
    same = await local.compare(photo, photo, session_id="s", call_id="c")
    different = await local.compare(photo, other, session_id="s", call_id="c")
    assert different.code is None, different.message
    assert same.score is not None and different.score is not None
    assert 0.0 <= different.score < same.score - 0.01


async def test_local_finds_the_small_face_on_an_id_card(local: LocalEmbeddingComparer, astronaut: np.ndarray) -> None:
    photo = jpeg(astronaut)
    on_card = await local.compare(photo, jpeg(id_card(astronaut)), session_id="s", call_id="c")
    mirrored = await local.compare(photo, jpeg(astronaut[:, ::-1, ::-1]), session_id="s", call_id="c")
    assert on_card.code is None, on_card.message
    # Even random weights see that both crops frame the same face the same way.
    assert on_card.score is not None and mirrored.score is not None
    assert on_card.score > mirrored.score + 0.2


async def test_local_threshold_is_respected(model_path: Path, astronaut: np.ndarray) -> None:
    photo, card = jpeg(astronaut), jpeg(id_card(astronaut))

    async def run(threshold: float) -> Comparison:
        comparer = make_comparer(settings(embedding_model=str(model_path), embedding_threshold=threshold))
        try:
            return await comparer.compare(photo, card, session_id="s", call_id="c")
        finally:
            await comparer.close()

    lenient = await run(0.0)
    assert lenient.outcome == "match" and lenient.score is not None
    assert 0.0 < lenient.score < 0.999
    strict = await run(min(1.0, lenient.score + 0.001))
    assert strict.outcome == "mismatch"
    assert strict.score == pytest.approx(lenient.score)
    assert strict.threshold == pytest.approx(lenient.score + 0.001)
    assert "do not match" in strict.message


@pytest.mark.parametrize("which", ["face", "id"])
async def test_local_blank_image_is_no_face(local: LocalEmbeddingComparer, astronaut: np.ndarray, which: str) -> None:
    photo, blank = jpeg(astronaut), jpeg(np.full((480, 640, 3), 250, np.uint8))
    face, card = (blank, photo) if which == "face" else (photo, blank)
    result = await local.compare(face, card, session_id="s", call_id="c")
    assert (result.outcome, result.code, result.score) == ("error", "compare_no_face", None)
    assert ("ID document" in result.message) == (which == "id")


async def test_local_unreadable_image_is_no_face(local: LocalEmbeddingComparer, astronaut: np.ndarray) -> None:
    result = await local.compare(jpeg(astronaut), b"not a jpeg", session_id="s", call_id="c")
    assert (result.outcome, result.code) == ("error", "compare_no_face")


async def test_local_work_runs_off_the_event_loop(local: LocalEmbeddingComparer, astronaut: np.ndarray,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    embed = local._embed

    def spy(rgb: np.ndarray) -> np.ndarray:
        threads.append(threading.get_ident())
        return embed(rgb)

    monkeypatch.setattr(local, "_embed", spy)
    photo = jpeg(astronaut)
    results = await asyncio.gather(*(local.compare(photo, photo, session_id="s", call_id=str(i)) for i in range(3)))
    assert [r.outcome for r in results] == ["match"] * 3
    assert len(threads) == 6
    assert threading.get_ident() not in threads


def test_comparison_json_is_plain() -> None:
    result = Comparison("local", "mismatch", 0.123456, 0.5, None, "The faces do not match.", 12.345)
    assert json.loads(json.dumps(result.to_json())) == {
        "backend": "local", "outcome": "mismatch", "score": 0.1235, "threshold": 0.5,
        "code": None, "message": "The faces do not match.", "ms": 12.3,
    }
