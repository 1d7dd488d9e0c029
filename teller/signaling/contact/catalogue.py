"""The business catalogue, read from TOML and checked whole at start-up."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config import ConfigError
from ...errors import NotFound

BUNDLED = Path(__file__).resolve().parents[2] / "config" / "catalogue.toml"
STEPS = ("identity_check", "risk_prompt", "transaction_confirmation", "signature", "anti_fraud_reminder")
REQUIRED_LANGUAGES = ("zh", "en")


@dataclass(frozen=True)
class Business:
    id: str
    skill: str
    priority: int
    steps: tuple[str, ...]
    name: dict[str, str]
    risk_prompt: dict[str, str]
    anti_fraud: dict[str, str]
    identity_questions: tuple[dict[str, str], ...]
    # Days its recordings are kept; None: recording.retention_days.
    retention_days: float | None = None

    def text(self, field: dict[str, str], language: str) -> str:
        return field.get(language) or field["en"]

    def to_json(self, language: str | None = None) -> dict[str, Any]:
        """The whole entry, or with `language` its texts in that language only."""

        def pick(texts: dict[str, str]) -> Any:
            return self.text(texts, language) if language else dict(texts)

        return {
            "id": self.id,
            "skill": self.skill,
            "priority": self.priority,
            "steps": list(self.steps),
            "signature_required": "signature" in self.steps,
            "name": pick(self.name),
            "script": {
                "risk_prompt": pick(self.risk_prompt),
                "identity_questions": [pick(q) for q in self.identity_questions],
                "anti_fraud": pick(self.anti_fraud),
            },
        }


@dataclass(frozen=True)
class Catalogue:
    businesses: dict[str, Business]

    def get(self, business_id: str) -> Business:
        business = self.businesses.get(business_id) if isinstance(business_id, str) else None
        if business is None:
            raise NotFound(f"no business {business_id!r}", code="business_not_found")
        return business

    def skills(self) -> set[str]:
        return {b.skill for b in self.businesses.values()}


def _texts(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in raw.items()):
        raise ConfigError(f"{where}: a table of language = text")
    missing = [lang for lang in REQUIRED_LANGUAGES if lang not in raw]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    return dict(raw)


def _business(raw: Any, index: int) -> Business:
    where = f"business #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a table")
    unknown = set(raw) - {"id", "skill", "priority", "steps", "name", "risk_prompt", "anti_fraud", "identity_questions", "retention_days"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    business_id, skill, priority = raw.get("id"), raw.get("skill"), raw.get("priority", 0)
    if not isinstance(business_id, str) or not business_id.replace("_", "").isalnum():
        raise ConfigError(f"{where}: id must be letters, digits and '_'")
    where = f"business {business_id!r}"
    if not isinstance(skill, str) or not skill:
        raise ConfigError(f"{where}: skill is required")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100:
        raise ConfigError(f"{where}: priority must be 0-100")
    steps = raw.get("steps", [])
    if not isinstance(steps, list) or any(s not in STEPS for s in steps):
        raise ConfigError(f"{where}: steps must be among {', '.join(STEPS)}")
    retention = raw.get("retention_days")
    if retention is not None and (isinstance(retention, bool) or not isinstance(retention, (int, float)) or retention <= 0):
        raise ConfigError(f"{where}: retention_days must be a positive number of days")
    questions = raw.get("identity_questions", [])
    if not isinstance(questions, list):
        raise ConfigError(f"{where}: identity_questions must be a list")
    return Business(
        id=business_id,
        skill=skill,
        priority=priority,
        steps=tuple(steps),
        name=_texts(raw.get("name"), f"{where}.name"),
        risk_prompt=_texts(raw.get("risk_prompt"), f"{where}.risk_prompt"),
        anti_fraud=_texts(raw.get("anti_fraud"), f"{where}.anti_fraud"),
        identity_questions=tuple(_texts(q, f"{where}.identity_questions") for q in questions),
        retention_days=float(retention) if retention is not None else None,
    )


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    source = Path(path) if path else BUNDLED
    try:
        data = tomllib.loads(source.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"catalogue {source}: {exc}") from exc
    entries = data.get("business")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"catalogue {source}: no [[business]] entries")
    businesses: dict[str, Business] = {}
    for index, raw in enumerate(entries):
        business = _business(raw, index)
        if business.id in businesses:
            raise ConfigError(f"catalogue {source}: business {business.id!r} twice")
        businesses[business.id] = business
    return Catalogue(businesses)
