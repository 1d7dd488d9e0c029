"""Material an agent shows a customer: a PDF's pages or an image, as PNG pages.

PDFs are rendered here (pdfium, off the event loop) so that every customer screen,
a kiosk's as much as an old phone's, only has to show an image. Pages live in the
state store, so any signalling process serves them; their URLs carry a random id
and are the capability to read them, because an <img> cannot send a token.
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
from typing import Any

from ...errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from ...state import StateStore

MAX_PDF_BYTES = 10 * 1024 * 1024
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_PAGES = 30
PAGE_WIDTH = 1280
KIND = "material_page"


def render_pdf(data: bytes) -> list[bytes]:
    """PNG bytes per page, at most MAX_PAGES, PAGE_WIDTH wide. CPU-heavy: run in a thread."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise BadRequest("the file is not a PDF pdfium can read", code="invalid_material") from exc
    try:
        if len(document) == 0:
            raise BadRequest("the PDF has no pages", code="invalid_material")
        if len(document) > MAX_PAGES:
            raise BadRequest(f"at most {MAX_PAGES} pages", code="invalid_material")
        pages = []
        for page in document:
            width = page.get_width()
            bitmap = page.render(scale=PAGE_WIDTH / width if width else 1.0)
            out = io.BytesIO()
            bitmap.to_pil().save(out, format="PNG", optimize=True)
            pages.append(out.getvalue())
        return pages
    finally:
        document.close()


def normalise_image(data: bytes) -> bytes:
    """Any PNG or JPEG, re-encoded as PNG: what is served is what was decoded, nothing else."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((PAGE_WIDTH * 2, PAGE_WIDTH * 2))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="PNG")
            return out.getvalue()
    except (UnidentifiedImageError, OSError) as exc:
        raise BadRequest("the file is not an image", code="invalid_material") from exc


async def store_material(store: StateStore, content_type: str, data: bytes, owner: str) -> dict[str, Any]:
    if content_type == "application/pdf":
        if len(data) > MAX_PDF_BYTES:
            raise PayloadTooLarge("a PDF is at most 10 MB", code="material_too_large")
        pages = await asyncio.to_thread(render_pdf, data)
        kind = "pdf"
    elif content_type in ("image/png", "image/jpeg"):
        if len(data) > MAX_IMAGE_BYTES:
            raise PayloadTooLarge("an image is at most 5 MB", code="material_too_large")
        pages = [await asyncio.to_thread(normalise_image, data)]
        kind = "image"
    else:
        raise UnsupportedMediaType("send application/pdf, image/png or image/jpeg", code="unsupported_media_type")
    material_id = f"MT_{secrets.token_urlsafe(16)}"
    for number, png in enumerate(pages, start=1):
        record = {"png": base64.b64encode(png).decode(), "owner": owner}
        await store.update_doc(KIND, f"{material_id}:{number}", lambda _current, r=record: r)
    return {
        "material_id": material_id,
        "kind": kind,
        "pages": [{"page": n, "url": f"/v1/materials/{material_id}/{n}.png"} for n in range(1, len(pages) + 1)],
    }


async def page_png(store: StateStore, material_id: str, page: str) -> bytes:
    if not material_id.startswith("MT_") or not page.isdigit():
        raise NotFound("no such material", code="material_not_found")
    record = await store.get_doc(KIND, f"{material_id}:{int(page)}")
    if record is None:
        raise NotFound("no such material", code="material_not_found")
    return base64.b64decode(record["png"])
