"""Masking card, ID and phone numbers in transcript lines, written or spoken.

Every final ASR line passes through `mask()` before it is stored or shown, so the
rules lean towards masking: a number that shows too little costs nothing, one that
shows too much is a leak. Why each rule is what it is:

- A number is a *run* of tokens: written digit groups (ASCII or full-width), English
  digit words (zero/oh/o, one … nine, "double"/"triple" + digit) and Chinese numerals
  (零〇一二三四五六七八九幺两). ASR writes the same card as "6222 0212 …", "six two
  two two …" or "六二二二…", and mixes them, so all three join one run.
- Written groups join only through ONE space, hyphen or dot: "1,000", "10:30" and
  "2024-05-01" are amounts, times and dates, and "7890.12" ends in a fraction. Dates,
  times and comma-grouped amounts never join a run at all, so "2024-05-01 138…" does
  not turn into a 19-digit "card". Spoken tokens also join through commas and runs
  of up to three separators, because that is how ASR punctuates a dictated number.
- A run is cut into segments that fit a class, choosing the cut that masks the most
  digits, then the most strongly recognised ones, then the fewest spans. So two
  cards read out back to back become two spans, and a spoken 16-digit card that
  happens to contain a mobile-shaped stretch is still masked whole.
- Classes, in this order:
  18 chars ending in X (17 digits + X): resident ID.
  86/0086 + a mobile or a landline without its 0: phone (digits = national number).
  18 digits: ID if the birth date YYYYMMDD at positions 7–14 is valid or the
  ISO 7064 MOD 11-2 check digit is, else a card (a card's digits 7–14 are rarely a
  date and its last digit matches MOD 11-2 one time in eleven).
  15 digits with a valid YYMMDD at positions 7–12: old resident ID.
  11 digits 1[3-9]…: mobile. 010/02X + 8 digits, 0[3-9]XX + 7–8 digits, or
  400/800 + 7 digits: landline.
  13–19 digits: bank card, whether or not it passes Luhn: ASR mishears one digit
  often enough that a failed check says "misheard card", not "not a card". Luhn
  only marks the card as strongly recognised.
  7–8 written digits: a local phone number only after a cue ("phone", "call",
  "电话", "手机" …) since the last number, otherwise an amount or a code.
  A spoken run of 7+ digits that fits nothing: phone up to 12 digits, else card;
  nobody reads out seven digits that are not somebody's number. "Spoken" means
  at least half its digits were words, so the 一 of "第一 13812345678" does not
  drag a mobile into the fallback.
- Known over-masking, accepted: a written group glued to a number by one space
  ("5000 13812345678", "2019 2020 2021 2022") reads as one card; counting aloud
  to seven reads as a phone.
- Replacements keep the last four characters ("[card ****1234]", "[ID ****123X]",
  "[phone ****5678]"), which is what an agent reads back to confirm. A replacement
  has brackets and no digit words, so masking masked text changes nothing.
- A cheap pre-check returns at once when the line has fewer than seven digits or
  digit words: most lines have none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

__all__ = ["Masked", "PiiSpan", "find_pii", "mask"]


@dataclass(frozen=True)
class PiiSpan:
    kind: str  # "id_number" | "bank_card" | "phone"
    start: int  # offsets in the original text
    end: int
    digits: str  # normalised digits, plus a trailing X for an ID
    replacement: str  # what mask() puts there


@dataclass(frozen=True)
class Masked:
    text: str
    spans: tuple[PiiSpan, ...]


MIN_DIGITS = 7
_MAX_SEGMENT = 20  # no class is longer; only a whole spoken run may be
_MAX_DP_TOKENS = 200

_LABELS = {"bank_card": "card", "id_number": "ID", "phone": "phone"}

_EN_DIGITS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}
_ZH_DIGITS = {
    "零": "0", "〇": "0", "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3", "四": "4",
    "五": "5", "六": "6", "七": "7", "八": "8", "九": "9",
}
_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")

_WORD = "zero|oh|one|two|three|four|five|six|seven|eight|nine|o"
_ZH = "零〇一二三四五六七八九幺两"
_NUM = "0-9０-９"

_TOKEN = re.compile(
    rf"(?<![a-z])(?P<mult>double|triple)[ \-,]{{1,2}}"
    rf"(?P<rep>(?:{_WORD})(?![a-z])|[{_NUM}](?![{_NUM}])|[{_ZH}])"
    rf"|(?P<num>[{_NUM}]+)"
    rf"|(?<![a-z])(?P<word>{_WORD})(?![a-z])"
    rf"|(?P<zh>[{_ZH}])"
    rf"|(?<![a-z])(?P<x>x)(?![a-z0-9])",
    re.IGNORECASE,
)
_PRECHECK = re.compile(
    rf"[{_NUM}{_ZH}]|(?<![a-z])(?:{_WORD}|double|(?P<triple>triple))(?![a-z])",
    re.IGNORECASE,
)
# Numbers that are not PII and must not glue onto a neighbouring group.
_BARRIER = re.compile(
    r"(?<![\d\-.])(?:19|20)\d{2}([-./])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12]\d|3[01])(?![\d]|[-.]\d)"  # dates
    r"|(?<!\d)\d{1,2}:\d{2}(?::\d{2})?(?!\d)"  # times
    r"|(?<![\d,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])"  # 1,000,000.50
)
_WRITTEN_SEP = frozenset(" -.\u00a0\u3000")
_SPOKEN_GAP = re.compile(r"[\s,，、\-‐–—]{0,3}")
_X_GAP = re.compile(r"[ \-]?")
_CUE = re.compile(
    r"(?<![a-z])(?:phone|telephone|tel|call|calling|mobile|cell|landline|ring)(?![a-z])"
    r"|电话|手机|座机|致电|拨打|打给",
    re.IGNORECASE,
)
_CUE_WINDOW = 24
_CUE_STOP = re.compile(rf"[{_NUM}\]]")
_MOBILE = re.compile(r"1[3-9]\d{9}")
# 010 and 02X take 8-digit numbers, 0[3-9]XX take 7 or 8; 400/800 are service lines.
_LANDLINE = re.compile(r"0(?:10|2\d)\d{8}|0[3-9]\d{9,10}|[48]00\d{7}")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


class _Token(NamedTuple):
    start: int
    end: int
    digits: str  # "" for the X of an ID
    spoken: bool
    is_x: bool


class _Class(NamedTuple):
    kind: str
    digits: str
    strong: bool  # a check or a prefix confirmed it; breaks ties between cuts


def find_pii(text: str) -> list[PiiSpan]:
    """The card, ID and phone numbers in `text`, in order, never overlapping."""
    if not _enough_digits(text):
        return []
    tokens = _tokens(text)
    spans: list[PiiSpan] = []
    prev_end = 0
    for run in _runs(text, tokens):
        if sum(len(t.digits) for t in run) >= MIN_DIGITS:
            spans.extend(_segment(text, run, prev_end))
        prev_end = run[-1].end
    return spans


# Whisper writes a dictated number the way it writes amounts: "6,220-212-3,456-7,890",
# "6,222.021.23456.78090", "622202123000". A digit sequence joined by commas, dots,
# hyphens or spaces that holds nine digits or more, and is no amount or decimal, is
# somebody's number whatever its grouping; it wins over a shorter number found inside it.
_LOOSE = re.compile(r"(?<!\d)\d(?:\d|[,.\- ](?=\d))*\d(?!\d)")
_AMOUNT = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?")
_DECIMAL = re.compile(r"\d+\.\d+")
LOOSE_DIGITS = 9


def _loose_spans(text: str) -> list[PiiSpan]:
    out = []
    for m in _LOOSE.finditer(text):
        group = m.group()
        digits = re.sub(r"\D", "", group)
        if len(digits) < LOOSE_DIGITS or _DECIMAL.fullmatch(group) or (_AMOUNT.fullmatch(group) and len(digits) <= 10):
            continue
        kind = "phone" if (len(digits) == 11 and digits[0] == "1") or len(digits) <= 10 else "bank_card"
        out.append(PiiSpan(kind, m.start(), m.end(), digits, f"[{_LABELS[kind]} ****{digits[-4:]}]"))
    return out


def _merge(strict: list[PiiSpan], loose: list[PiiSpan]) -> list[PiiSpan]:
    """A loose span replaces the strict ones inside it unless they already cover at least
    half its digits: then the strict parse understood the text (a date beside a phone,
    cents after a card) and only what it left is at stake."""
    spans = list(strict)
    for span in loose:
        inside = [s for s in spans if span.start < s.end and s.start < span.end]
        if sum(len(s.digits) for s in inside) * 2 >= len(span.digits):
            continue
        spans = [s for s in spans if s not in inside] + [span]
    return sorted(spans, key=lambda span: span.start)


def mask(text: str) -> Masked:
    """The text with each number replaced; applying it again changes nothing."""
    spans = find_pii(text)
    if any(c.isdigit() for c in text):
        loose = _loose_spans(text)
        if loose:
            spans = _merge(spans, loose)
    if not spans:
        return Masked(text, ())
    parts: list[str] = []
    pos = 0
    for span in spans:
        parts.append(text[pos:span.start])
        parts.append(span.replacement)
        pos = span.end
    parts.append(text[pos:])
    return Masked("".join(parts), tuple(spans))


def _enough_digits(text: str) -> bool:
    count = 0
    for m in _PRECHECK.finditer(text):
        count += 2 if m.group("triple") else 1
        if count >= MIN_DIGITS:
            return True
    return False


def _tokens(text: str) -> list[_Token]:
    barriers = [m.span() for m in _BARRIER.finditer(text)]
    tokens: list[_Token] = []
    for m in _TOKEN.finditer(text):
        start, end = m.span()
        if barriers and any(b0 < end and start < b1 for b0, b1 in barriers):
            continue
        if m.group("mult"):
            times = 2 if m.group("mult").lower() == "double" else 3
            tokens.append(_Token(start, end, _digit(m.group("rep")) * times, True, False))
        elif m.group("num"):
            tokens.append(_Token(start, end, m.group("num").translate(_FULLWIDTH), False, False))
        elif m.group("word"):
            tokens.append(_Token(start, end, _EN_DIGITS[m.group("word").lower()], True, False))
        elif m.group("zh"):
            tokens.append(_Token(start, end, _ZH_DIGITS[m.group("zh")], True, False))
        else:
            tokens.append(_Token(start, end, "", False, True))
    return tokens


def _digit(rep: str) -> str:
    rep = rep.lower()
    return _EN_DIGITS.get(rep) or _ZH_DIGITS.get(rep) or rep.translate(_FULLWIDTH)


def _runs(text: str, tokens: list[_Token]) -> list[list[_Token]]:
    runs: list[list[_Token]] = []
    for token in tokens:
        if runs and _joins(text, runs[-1][-1], token):
            runs[-1].append(token)
        else:
            runs.append([token])
    return runs


def _joins(text: str, a: _Token, b: _Token) -> bool:
    """Whether `b` continues the number that `a` ends; the X of an ID ends it."""
    if a.is_x:
        return False
    gap = text[a.end:b.start]
    if b.is_x:
        return _X_GAP.fullmatch(gap) is not None
    if a.spoken or b.spoken:
        return _SPOKEN_GAP.fullmatch(gap) is not None
    if len(gap) != 1 or gap not in _WRITTEN_SEP:
        return False
    if gap == "." and len(b.digits) <= 2:
        # "7890.12" is a fraction unless another group follows ("138.12.34")
        after = text[b.end:b.end + 2]
        return len(after) == 2 and after[0] in _WRITTEN_SEP and after[1].isdigit()
    return True


def _segment(text: str, run: list[_Token], prev_end: int) -> list[PiiSpan]:
    """Cut a run into spans: most digits masked, then most recognised, then fewest spans."""
    n = len(run)
    if n > _MAX_DP_TOKENS and 2 * _spoken_digits(run) >= sum(len(t.digits) for t in run):
        # a dictation this long is masked whole; cutting it finely costs too much
        found = _classify(text, run, prev_end)
        if found is None:
            return []
        return [_span(text, run, 0, n, found)]
    cum = [0]
    for token in run:
        cum.append(cum[-1] + len(token.digits))
    best: list[tuple[int, int, int]] = [(0, 0, 0)] * (n + 1)
    back: list[tuple[int, _Class] | None] = [None] * (n + 1)
    for i in range(1, n + 1):
        best[i], back[i] = best[i - 1], None
        starts = []
        for j in range(i - 1, -1, -1):
            if cum[i] - cum[j] > _MAX_SEGMENT:
                break
            starts.append(j)
        if i == n and (not starts or starts[-1] != 0):
            starts.append(0)
        for j in starts:
            found = _classify(text, run[j:i], run[j - 1].end if j else prev_end)
            if found is None:
                continue
            d = cum[i] - cum[j]
            c, s, k = best[j]
            score = (c + d, s + (d if found.strong else 0), k - 1)
            if score > best[i]:
                best[i], back[i] = score, (j, found)
    spans: list[PiiSpan] = []
    i = n
    while i > 0:
        step = back[i]
        if step is None:
            i -= 1
            continue
        j, found = step
        spans.append(_span(text, run, j, i, found))
        i = j
    spans.reverse()
    return spans


def _span(text: str, run: list[_Token], j: int, i: int, found: _Class) -> PiiSpan:
    start = run[j].start
    if found.kind == "phone" and start > 0 and text[start - 1] == "+" and not run[j].spoken:
        start -= 1  # the + of +86 goes with the number
    replacement = f"[{_LABELS[found.kind]} ****{found.digits[-4:]}]"
    return PiiSpan(found.kind, start, run[i - 1].end, found.digits, replacement)


def _classify(text: str, segment: list[_Token], prev_end: int) -> _Class | None:
    has_x = segment[-1].is_x
    digits = "".join(t.digits for t in segment)
    n = len(digits)
    if n < MIN_DIGITS:
        return None
    if has_x:
        return _Class("id_number", digits + "X", True) if n == 17 else None
    national = _national(digits)
    if national is not None:
        return _Class("phone", national, True)
    if n == 18:
        if _id_date_ok(digits[6:14]) or _id_check_ok(digits):
            return _Class("id_number", digits, True)
        return _Class("bank_card", digits, _luhn_ok(digits))
    if n == 15 and _id_date_ok("19" + digits[6:12]):
        return _Class("id_number", digits, True)
    if _MOBILE.fullmatch(digits) or _LANDLINE.fullmatch(digits):
        return _Class("phone", digits, True)
    if 13 <= n <= 19:
        return _Class("bank_card", digits, _luhn_ok(digits))
    spoken = _spoken_digits(segment)
    if n <= 8 and not spoken and _cue_before(text, segment[0].start, prev_end):
        return _Class("phone", digits, True)
    if 2 * spoken >= n:
        return _Class("phone" if n <= 12 else "bank_card", digits, False)
    return None


def _spoken_digits(tokens: list[_Token]) -> int:
    return sum(len(t.digits) for t in tokens if t.spoken)


def _national(digits: str) -> str | None:
    """The national number behind a +86/0086 prefix, if what follows is a phone."""
    for prefix in ("0086", "86"):
        if digits.startswith(prefix):
            rest = digits[len(prefix):]
            if _MOBILE.fullmatch(rest):
                return rest
            if _LANDLINE.fullmatch("0" + rest):
                return "0" + rest
    return None


def _cue_before(text: str, start: int, prev_end: int) -> bool:
    """A phone cue since the previous number (or placeholder), within a few words."""
    window = text[max(prev_end, start - _CUE_WINDOW, 0):start]
    stops = list(_CUE_STOP.finditer(window))
    if stops:
        window = window[stops[-1].end():]
    return _CUE.search(window) is not None


def _id_date_ok(yyyymmdd: str) -> bool:
    year, month, day = int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8])
    if not 1900 <= year <= 2099:
        return False
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _id_check_ok(id18: str) -> bool:
    total = sum(int(c) * w for c, w in zip(id18[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == id18[17].upper()


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0
