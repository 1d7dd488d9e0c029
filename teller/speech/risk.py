"""Risk phrases in what is said: fraud coaching, abuse, unlawful requests.

A customer who says "safe account" or 安全账户 is very likely being coached by a
fraudster on the phone; the agent must hear about it while the call is still live.
The rules are data (`teller/config/risk_rules.toml`) so a bank's fraud team can add
the phrases of this month's scam without a release. They run on the ASR text of
every participant; the caller decides what a hit means for each role (an agent who
says "never tell anyone your verification code" hits the same rule as a fraudster).

Matching, and why:
- NFKC + casefold first: ASR and chat both produce full-width letters and mixed case
  ("ＳＡＦＥ　ＡＣＣＯＵＮＴ"); curly apostrophes become straight ones.
- English keywords match whole words only ("otp" is not in "hotpot") and accept
  any spaces or hyphens between words and an optional apostrophe ("safe-account",
  "SAFE  ACCOUNT", "dont tell the bank").
- Spaces and in-word punctuation (hyphens, dots, quotes) between two Chinese
  characters are dropped before matching: ASR segments Chinese with spaces
  ("安全 账户"). Commas and sentence marks are kept, because "注意安全，账户密码…"
  is a safety reminder, not a safe account.
- Each rule is one compiled alternation of its keywords and patterns, so a scan is
  one `search` per rule, and its first match is the leftmost one.
- Hits carry offsets in the original text, through a map built while normalising.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from teller.config import ConfigError

__all__ = [
    "CATEGORIES",
    "SEVERITIES",
    "RiskDetector",
    "RiskHit",
    "RiskRule",
    "load_rules",
    "load_rules_file",
]

CATEGORIES = ("fraud_coaching", "abusive", "unlawful")
SEVERITIES = ("warning", "critical")
ADVICE_LANGUAGES = ("zh", "en")
_FIELDS = frozenset({"id", "category", "severity", "languages", "keywords", "patterns", "advice"})


@dataclass(frozen=True)
class RiskRule:
    id: str
    category: str  # "fraud_coaching" | "abusive" | "unlawful"
    severity: str  # "warning" | "critical"
    languages: tuple[str, ...]  # ("en",), ("zh",), or () for any
    keywords: tuple[str, ...]
    patterns: tuple[str, ...]  # Python regular expressions, on the normalised text
    advice: dict[str, str]  # {"zh": ..., "en": ...}: what the agent should do


@dataclass(frozen=True)
class RiskHit:
    rule_id: str
    category: str
    severity: str
    phrase: str  # the matched text as it appears in the input
    start: int
    end: int
    advice: dict[str, str]


class RiskDetector:
    """Scans transcript lines against rules compiled once, at construction."""

    def __init__(self, rules: list[RiskRule]) -> None:
        self._rules = [(rule, _compile(rule)) for rule in rules]

    @property
    def rules(self) -> list[RiskRule]:
        return [rule for rule, _ in self._rules]

    def scan(self, text: str, language: str | None = None) -> list[RiskHit]:
        """At most one hit per rule (its leftmost match), ordered by position.

        `language` ("zh", "en-GB", …) skips rules for other languages; None runs all.
        """
        if not text:
            return []
        lang = _primary_language(language)
        normal, origin = _normalise(text)
        hits: list[RiskHit] = []
        for rule, regex in self._rules:
            if lang and rule.languages and lang not in rule.languages:
                continue
            m = next((m for m in regex.finditer(normal) if m.end() > m.start()), None)
            if m is None:
                continue
            start, end = origin[m.start()], origin[m.end() - 1] + 1
            hits.append(RiskHit(rule.id, rule.category, rule.severity, text[start:end], start, end,
                                rule.advice))
        hits.sort(key=lambda h: (h.start, h.end, h.rule_id))
        return hits


def load_rules(raw: list[dict[str, Any]]) -> list[RiskRule]:
    """Rules from parsed TOML; a mistake is a ConfigError naming the rule and field."""
    if not isinstance(raw, list):
        raise ConfigError("risk rules: 'rules' must be a list of tables")
    rules: list[RiskRule] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        rule = _rule(index, entry)
        if rule.id in seen:
            raise ConfigError(f"risk rule [{index}] (id {rule.id!r}): id: duplicate id")
        seen.add(rule.id)
        rules.append(rule)
    return rules


def load_rules_file(path: str | Path | None = None) -> list[RiskRule]:
    """Rules from a TOML file of [[rules]] tables; None means the bundled defaults."""
    try:
        if path is None:
            name = "teller/config/risk_rules.toml"
            text = resources.files("teller.config").joinpath("risk_rules.toml").read_text("utf-8")
        else:
            name = str(path)
            text = Path(path).read_text("utf-8")
        doc = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"risk rules {name}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"risk rules {name}: not valid TOML: {exc}") from exc
    if "rules" not in doc:
        raise ConfigError(f"risk rules {name}: no [[rules]] tables (write rules = [] for none)")
    try:
        return load_rules(doc["rules"])
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from exc


# --- validation ---------------------------------------------------------------------


def _rule(index: int, entry: Any) -> RiskRule:
    where = f"risk rule [{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not rule_id.strip():
        raise ConfigError(f"{where}: id: missing or not a non-empty string")
    where = f"risk rule [{index}] (id {rule_id!r})"
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: unknown field")
    category = entry.get("category")
    if category not in CATEGORIES:
        raise ConfigError(f"{where}: category: {category!r} is not one of {', '.join(CATEGORIES)}")
    severity = entry.get("severity")
    if severity not in SEVERITIES:
        raise ConfigError(f"{where}: severity: {severity!r} is not one of {', '.join(SEVERITIES)}")
    languages = tuple(lang.lower() for lang in _strings(where, entry, "languages"))
    keywords = _strings(where, entry, "keywords")
    patterns = _strings(where, entry, "patterns")
    if not keywords and not patterns:
        raise ConfigError(f"{where}: keywords: a rule needs keywords or patterns")
    for i, keyword in enumerate(keywords):
        if not _normal_string(keyword).strip():
            raise ConfigError(f"{where}: keywords[{i}]: empty")
    for i, pattern in enumerate(patterns):
        _check_pattern(f"{where}: patterns[{i}]", pattern)
    advice = entry.get("advice")
    if not isinstance(advice, dict):
        raise ConfigError(f"{where}: advice: must be a table with 'zh' and 'en'")
    for lang in ADVICE_LANGUAGES:
        text = advice.get(lang)
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where}: advice.{lang}: missing or not a non-empty string")
    for key, text in advice.items():
        if not isinstance(text, str):
            raise ConfigError(f"{where}: advice.{key}: must be a string")
    rule = RiskRule(rule_id, category, severity, languages, keywords, patterns, dict(advice))
    try:
        _compile(rule)
    except re.error as exc:
        raise ConfigError(f"{where}: patterns: do not combine into one expression: {exc}") from exc
    return rule


def _strings(where: str, entry: dict[str, Any], field: str) -> tuple[str, ...]:
    value = entry.get(field, [])
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {field}: must be a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{where}: {field}[{i}]: {item!r} is not a string")
    return tuple(value)


def _check_pattern(where: str, pattern: str) -> None:
    if not pattern:
        raise ConfigError(f"{where}: empty")
    try:
        # wrapped as it will be in the rule's alternation: a global flag such as
        # (?i) is only legal at the very start, so it is caught here
        compiled = re.compile(f"(?:{pattern})", re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"{where}: not a valid regular expression: {exc}") from exc
    if compiled.fullmatch(""):
        raise ConfigError(f"{where}: matches the empty string")
    if _NUMBERED_BACKREF.search(pattern):
        raise ConfigError(f"{where}: numbered backreferences are not supported; use (?P=name)")


# --- matching ----------------------------------------------------------------------

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# what ASR puts inside a Chinese word; commas and sentence marks are real breaks
_CJK_GAP = re.compile(rf"(?<=[{_HAN}])[\s\-‐‑–—·・'\"“”‘’「」『』…~]+(?=[{_HAN}])")
_WORD_SEP = r"[\s\-‐‑–—_]*"
_SPLIT_WORDS = re.compile(r"[\s\-‐‑–—_]+")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})
_NUMBERED_BACKREF = re.compile(r"(?<!\\)\\[1-9]")
_ALNUM_ASCII = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


def _normal_string(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES)


def _normalise(text: str) -> tuple[str, list[int]]:
    """The text as rules see it, and for each of its characters the original index."""
    if text.isascii():
        return text.lower().translate(_QUOTES), list(range(len(text)))
    chars: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        for c in (ch.lower().translate(_QUOTES) if ch.isascii() else _normal_string(ch)):
            chars.append(c)
            origin.append(i)
    normal = "".join(chars)
    gaps = [m.span() for m in _CJK_GAP.finditer(normal)]
    if not gaps:
        return normal, origin
    keep_chars: list[str] = []
    keep_origin: list[int] = []
    pos = 0
    for a, b in gaps:
        keep_chars.append(normal[pos:a])
        keep_origin.extend(origin[pos:a])
        pos = b
    keep_chars.append(normal[pos:])
    keep_origin.extend(origin[pos:])
    return "".join(keep_chars), keep_origin


def _keyword_regex(keyword: str) -> str:
    words = [w for w in _SPLIT_WORDS.split(_normal_string(keyword).strip()) if w]
    parts: list[str] = []
    for word in words:
        piece = []
        for k, c in enumerate(word):
            if k and _is_han(c) != _is_han(word[k - 1]):
                piece.append(r"\s*")
            piece.append("'?" if c == "'" else re.escape(c))
        parts.append("".join(piece))
    body = ""
    for k, part in enumerate(parts):
        if k:
            both_han = _is_han(words[k - 1][-1]) and _is_han(words[k][0])
            body += "" if both_han else _WORD_SEP
        body += part
    first, last = words[0][0], words[-1][-1]
    head = r"(?<![a-z0-9])" if first in _ALNUM_ASCII else ""
    tail = r"(?![a-z0-9])" if last in _ALNUM_ASCII else ""
    return head + body + tail


def _is_han(c: str) -> bool:
    return "\u3400" <= c <= "\u4dbf" or "\u4e00" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff"


def _compile(rule: RiskRule) -> re.Pattern[str]:
    alternatives = [_keyword_regex(k) for k in rule.keywords] + list(rule.patterns)
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE)


def _primary_language(language: str | None) -> str | None:
    if not language:
        return None
    return re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0] or None
