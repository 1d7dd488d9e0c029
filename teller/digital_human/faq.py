"""The digital employee's FAQ and the two intents it must never miss: "a person, please"
and "goodbye".

Matching is retrieval, not understanding: a question is scored against every question
variant in the file by TF-IDF cosine over English word stems and Chinese character
bigrams and characters, so the TOML file stays the only thing a bank edits and every answer can be
traced to the variant it matched. A Whisper transcript of a paraphrase (no punctuation,
an "um", one misheard word) still shares most weighted tokens with its variant; a
question about something else shares almost none.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..config import ConfigError
from ..errors import BadRequest

SHIPPED = "faq.toml"
DEFAULT_THRESHOLD = 0.4
DEFAULT_SKILL = "service"


class FaqError(BadRequest, ConfigError):
    """A knowledge base that cannot be used. A ConfigError because the file is configuration,
    so code that reports bad settings reports this too; a TellerError so that callers and
    tests tell the failures apart by `code`."""

    code = "faq_invalid"


@dataclass(frozen=True)
class FaqEntry:
    id: str
    skill: str
    questions: dict[str, list[str]]  # language -> question variants
    answers: dict[str, str]  # language -> answer, spoken by TTS


@dataclass(frozen=True)
class FaqMatch:
    entry: FaqEntry
    score: float
    language: str  # of `answer`: the question's language unless the entry lacks it
    answer: str


# -- text ------------------------------------------------------------------------------

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"([{_CJK}]+)")
_APOSTROPHES = re.compile("['\u2018\u2019`\u00b4]")
# "I'd" would become "id", which must stay free to mean an ID card.
_WOULD = re.compile(r"\b(i|you|we|they|he|she)['\u2019]d\b")
# Past forms customers say of cards and money; the suffix rules cannot reach them.
_IRREGULAR = MappingProxyType({
    "stole": "steal", "stolen": "steal", "lost": "lose", "froze": "freeze", "frozen": "freeze",
    "forgot": "forget", "forgotten": "forget", "paid": "pay", "sent": "send", "took": "take", "taken": "take",
    "gave": "give", "given": "give", "broke": "break", "broken": "break", "came": "come", "bought": "buy",
    "withdrew": "withdraw", "withdrawn": "withdraw", "told": "tell", "children": "child",
})

def _word_set(words: str) -> frozenset[str]:
    """Word lists are kept as blocks of text: easier to read and extend than literals."""
    return frozenset(words.split())


STOP_WORDS = _word_set("""
a about actually after again ah all also am an and any anyone are as at be been before being but by
can cannot cant could did didnt do does doesnt doing dont er erm for from get going gonna got guess
had has have having he hello her here hers hey hi him his hmm how hows i if im in into is isnt it
its ive just know let lets like may me might more most much must my need no not now of off oh ok
okay on once only or other our out over please really right say she should so some such tell than
thank thanks that thats the their them then there theres these they think this those to too uh um
umm up us very wanna want was we well were what whats when where which while who why will with wont
would yeah yes you your youre yours
""")

# Removed before bigramming, and replaced by a break so that no bigram spans the gap:
# courtesy and question words that every variant has and that say nothing about the topic.
_ZH_FILLER = re.compile("|".join(sorted(_word_set("""
你好 您好 请问 麻烦 一下 那个 这个 就是 我想 我要 想要 需要 可以 能不能 能否 是不是 怎么办 怎么样 怎么 怎样 如何
咋办 咋 啥 什么 哪些 哪里 哪儿 多少 有没有 没有 要 能 会 嗯 啊 呃 哦 呀 吧 呢 吗 嘛 的 请 我 你 您 你们 您们
"""), key=lambda w: (-len(w), w))) + "|了(?!解)")


def normalise(text: str) -> str:
    """Full-width forms folded to ASCII (NFKC), lower case, apostrophes dropped so that
    "what's" stays one word, and every other punctuation mark or symbol a space."""
    text = _WOULD.sub(r"\1 would", unicodedata.normalize("NFKC", text).lower())
    text = _APOSTROPHES.sub("", text)
    return "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)


def stem(word: str) -> str:
    """Light suffix stripping, enough for "opening"/"opened"/"opens" to meet "open".

    Not Porter: it only has to map the forms a customer says onto the forms a bank
    writes, consistently for both, so a few odd stems ("clos", "rat") are harmless.
    """
    word = _IRREGULAR.get(word, word)
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 4 and word.endswith("ied"):
        word = word[:-3] + "y"
    else:
        for suffix in ("ing", "ed"):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("eed"):
                word = word[: -len(suffix)]
                if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeioulsz":
                    word = word[:-1]
                break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def _pieces(normalised: str) -> list[str]:
    """Words and runs of CJK characters, CJK runs cut loose from adjacent Latin."""
    return _CJK_RUN.sub(r" \1 ", normalised).split()


def _is_cjk(piece: str) -> bool:
    return _CJK_RUN.match(piece) is not None


def _cjk_tokens(run: str) -> Iterator[str]:
    """Bigrams stand in for words (no segmenter needed), characters for the bigrams an
    ASR slip or a synonym breaks: "关门" still meets "开门" on "门"."""
    for part in _ZH_FILLER.sub(" ", run).split():
        yield from (part[i : i + 2] for i in range(len(part) - 1))
        yield from part


def tokens(text: str) -> list[str]:
    """What the FAQ scores: English stems without stop words, Chinese bigrams and
    characters without filler words, digits as they are."""
    out: list[str] = []
    for piece in _pieces(normalise(text)):
        if _is_cjk(piece):
            out.extend(_cjk_tokens(piece))
        elif piece not in STOP_WORDS and (word := stem(piece)) not in STOP_WORDS:
            out.append(word)
    return out


# -- the knowledge base -----------------------------------------------------------------


@dataclass(frozen=True)
class _Vector:
    language: str
    weights: dict[str, float]
    norm: float


class FaqBase:
    """Entries with their question variants weighted once, at load; `match` only reads."""

    def __init__(self, entries: Iterable[FaqEntry], threshold: float = DEFAULT_THRESHOLD,
                 default_skill: str = DEFAULT_SKILL, source: str = "<faq>") -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 1:
            raise FaqError(f"{source}: threshold must be a number in (0, 1], not {threshold!r}", source=source)
        self.entries: tuple[FaqEntry, ...] = tuple(entries)
        self.threshold = float(threshold)
        self.default_skill = default_skill
        self.source = source
        _check_entries(self.entries, source)
        counted = [[(language, Counter(tokens(q))) for language, qs in e.questions.items() for q in qs]
                   for e in self.entries]
        documents = [counts for variants in counted for _, counts in variants]
        df = Counter(token for counts in documents for token in counts)
        n = len(documents)
        self._idf = {token: math.log((1 + n) / (1 + d)) + 1 for token, d in df.items()}
        # A word no variant has weighs most: an unrelated question is mostly such words.
        self._unknown_idf = math.log(1 + n) + 1
        self._vectors: list[dict[str, list[_Vector]]] = []
        for variants in counted:
            by_language: dict[str, list[_Vector]] = {}
            for language, counts in variants:
                by_language.setdefault(language, []).append(self._vector(language, counts))
            self._vectors.append(by_language)

    def _vector(self, language: str, counts: Counter[str]) -> _Vector:
        weights = {t: c * self._idf.get(t, self._unknown_idf) for t, c in counts.items()}
        return _Vector(language, weights, math.sqrt(sum(w * w for w in weights.values())))

    # -- loading ---------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> FaqBase:
        """The file at `path`, or the starter base shipped in teller/config/faq.toml."""
        if path is None:
            text = resources.files("teller.config").joinpath(SHIPPED).read_text("utf-8")
            return cls.loads(text, f"teller/config/{SHIPPED}")
        try:
            text = Path(path).read_text("utf-8")
        except FileNotFoundError as exc:
            raise FaqError(f"FAQ file not found: {path}", code="faq_not_found", source=str(path)) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise FaqError(f"{path}: cannot be read: {exc}", code="faq_unreadable", source=str(path)) from exc
        return cls.loads(text, str(path))

    @classmethod
    def loads(cls, text: str, source: str = "<faq>") -> FaqBase:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise FaqError(f"{source}: not valid TOML: {exc}", code="faq_syntax", source=source) from exc
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<faq>") -> FaqBase:
        """Checks every key and type, so a typo fails at start-up with its place named
        instead of silently never matching."""
        _no_unknown_keys(data, {"threshold", "default_skill", "entry"}, source, source)
        default_skill = _text(data.get("default_skill", DEFAULT_SKILL), f"{source}: default_skill", source)
        raw = data.get("entry")
        if not isinstance(raw, list) or not raw:
            raise FaqError(f"{source}: no [[entry]] tables", source=source)
        entries = [_parse_entry(item, i, default_skill, source) for i, item in enumerate(raw, 1)]
        return cls(entries, data.get("threshold", DEFAULT_THRESHOLD), default_skill, source)

    # -- matching --------------------------------------------------------------------

    def rank(self, text: str, language: str) -> list[FaqMatch]:
        """Every entry that shares a token with `text`, best first (ties in file order).

        An entry is scored by its best variant in `language`; an entry with no variant in
        that language by its best variant in any, answered in that variant's language.
        """
        counts = Counter(tokens(text))
        query = {t: c * self._idf.get(t, self._unknown_idf) for t, c in counts.items()}
        query_norm = math.sqrt(sum(w * w for w in query.values()))
        if not query_norm:
            return []
        matches: list[FaqMatch] = []
        for entry, by_language in zip(self.entries, self._vectors):
            key = _language_key(language, by_language)
            candidates = by_language[key] if key else [v for vs in by_language.values() for v in vs]
            best, best_score = candidates[0], 0.0
            for vector in candidates:
                dot = sum(w * vector.weights.get(t, 0.0) for t, w in query.items())
                score = dot / (query_norm * vector.norm)
                if score > best_score:
                    best, best_score = vector, score
            if best_score > 0:
                answer_language = _language_key(language, entry.answers) or best.language
                matches.append(FaqMatch(entry, best_score, answer_language, entry.answers[answer_language]))
        matches.sort(key=lambda m: -m.score)
        return matches

    def match(self, text: str, language: str) -> FaqMatch | None:
        """The best entry if it scores at least the threshold; None means "I don't know",
        never a guess."""
        ranked = self.rank(text, language)
        return ranked[0] if ranked and ranked[0].score >= self.threshold else None


def _language_key(language: str, available: Mapping[str, Any]) -> str | None:
    """"zh-CN" finds "zh-cn" or else "zh"."""
    language = language.strip().lower().replace("_", "-")
    if language in available:
        return language
    primary = language.split("-", 1)[0]
    return primary if primary in available else None


def _no_unknown_keys(table: Mapping[str, Any], known: set[str], where: str, source: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise FaqError(f"{where}: unknown key(s) {unknown}; expected {sorted(known)}", source=source)


def _text(value: Any, where: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FaqError(f"{where} must be a non-empty string, not {value!r}", source=source)
    return value.strip()


def _parse_entry(item: Any, index: int, default_skill: str, source: str) -> FaqEntry:
    where = f"{source}: entry {index}"
    if not isinstance(item, dict):
        raise FaqError(f"{where} must be a table", source=source)
    if isinstance(item.get("id"), str):
        where = f"{where} ({item['id']!r})"
    _no_unknown_keys(item, {"id", "skill", "questions", "answers"}, where, source)
    entry_id = _text(item.get("id"), f"{where}: id", source)
    skill = _text(item.get("skill", default_skill), f"{where}: skill", source)
    questions = item.get("questions")
    if not isinstance(questions, dict) or not questions:
        raise FaqError(f"{where}: questions must be a table of language = [variants]", source=source)
    parsed_questions: dict[str, list[str]] = {}
    for language, variants in questions.items():
        if not isinstance(variants, list) or not variants:
            raise FaqError(f"{where}: questions.{language} must be a non-empty list of strings", source=source)
        parsed_questions[language.lower()] = [_text(v, f"{where}: questions.{language}[]", source)
                                              for v in variants]
    answers = item.get("answers")
    if answers is None:
        raise FaqError(f"{where}: no answers", code="faq_missing_answer", entry=entry_id, source=source)
    if not isinstance(answers, dict):
        raise FaqError(f"{where}: answers must be a table of language = \"answer\"", source=source)
    parsed_answers = {language.lower(): _text(a, f"{where}: answers.{language}", source)
                      for language, a in answers.items()}
    return FaqEntry(entry_id, skill, parsed_questions, parsed_answers)


def _check_entries(entries: tuple[FaqEntry, ...], source: str) -> None:
    """What types cannot say: unique ids, an answer for every language asked in, and
    questions that can match at all."""
    if not entries:
        raise FaqError(f"{source}: no entries", source=source)
    seen: set[str] = set()
    for entry in entries:
        if entry.id in seen:
            raise FaqError(f"{source}: entry id {entry.id!r} is used twice", code="faq_duplicate_id",
                           entry=entry.id, source=source)
        seen.add(entry.id)
        if not entry.questions:
            raise FaqError(f"{source}: entry {entry.id!r} has no questions", entry=entry.id, source=source)
        missing = sorted(set(entry.questions) - set(entry.answers))
        if missing:
            raise FaqError(f"{source}: entry {entry.id!r} has questions but no answer in {missing}",
                           code="faq_missing_answer", entry=entry.id, source=source)
        for language, variants in entry.questions.items():
            for variant in variants:
                if not tokens(variant):
                    raise FaqError(f"{source}: entry {entry.id!r}: question {variant!r} ({language}) has only "
                                   "stop words or punctuation, so nothing can match it", entry=entry.id, source=source)


# -- intents -----------------------------------------------------------------------------


def _stem_set(words: str) -> frozenset[str]:
    return frozenset(stem(w) for w in words.split())


_CLAUSE_BREAK = re.compile(r"[.,;:!?\u3002\uff0c\uff1b\uff1a\uff01\uff1f\u3001\n]|\bbut\b")

_PERSON = _stem_set("""
person people human agent representative rep operator teller staff colleague manager officer advisor adviser
clerk customerservice
""")
_SOMEONE = _stem_set("someone somebody anyone anybody")
_ASK = _stem_set("""
want wanna need like talk speak connect transfer get put through reach see chat switch prefer find bring
contact ask
""")
_TALK = _stem_set("talk speak chat connect transfer put through reach")
_NEGATORS = _stem_set("not no dont doesnt didnt isnt arent never without nobody instead")
_NEEDED = _stem_set("need needed necessary unnecessary required")
# Words a request may have between its verb and the person: "speak with one of your agents".
_LINK = _stem_set("""
a an the to with for me us my real live actual human some one of your please just really actually now
rather would could can may do let
""")
_BARE = _stem_set("""
a an the real live actual human please um uh er hi hello hey ok okay just now yes customer service
""")
_ZH_PERSON = re.compile("人工(?!智能)(客服|服务|坐席)?|真人|客服|柜员|工作人员|业务员|营业员|客户经理|信贷员|经理|坐席|专人")
_ZH_ASK = re.compile("[转找要接叫请让换跟和同与给打]|联系|需要|想")
_ZH_NEGATED_BEFORE = re.compile("(?<!是)不是|不要|不用|不需要|不想|不必|不找|不转|别|甭|无需|没必要|用不着")
_ZH_NEGATED_AFTER = re.compile("^.{0,3}(不用|不需要|不必|没必要|算了|不要了|用不着)")
_ZH_IDENTITY = re.compile("(你|您|这)(是|是不是)$")
_ZH_POLITE = re.compile("不好意思|对不起")
_ZH_BARE = re.compile("请|麻烦|帮我|给我|一下|吧|啊|呀|嗯|的|我|你好|您好|谢谢|好")


def _clauses(text: str) -> list[str]:
    """Clauses, so that a negation in one ("I don't know, I want a person") leaves the
    next alone. Whisper often leaves out the commas; the word windows below cope."""
    text = unicodedata.normalize("NFKC", text).lower()
    return [c for c in _CLAUSE_BREAK.split(text) if c.strip()]


_CAN_I_HAVE = re.compile(r"\b(can|could|may) (i|we) have\b")


def _words(clause: str) -> list[str]:
    text = normalise(clause).replace("customer service", "customerservice")
    text = _CAN_I_HAVE.sub(r"\1 \2 get", text)  # "have" alone is no request: "I have a person on the phone"
    return [stem(w) for w in _pieces(text) if not _is_cjk(w)]


def _english_asks_for_person(words: list[str]) -> bool:
    """A person word with a request verb before it, reached through link words only: so
    "I want to transfer money to a person" (a payment) and "are you a real person?" (about
    the bot) are not requests. A negation on the way, or "not needed" after, cancels it."""
    for i, word in enumerate(words):
        if word not in _PERSON and word not in _SOMEONE:
            continue
        asked = negated = False
        for before in reversed(words[max(0, i - 8) : i]):
            if before in _NEGATORS:
                negated = True
            elif before in _ASK:
                asked = asked or word in _PERSON or before in _TALK
            elif before not in _LINK:
                break
        after = words[i + 1 : i + 4]
        if any(a in _NEEDED for a in after) and any(a in _NEGATORS for a in after):
            negated = True
        if word in _PERSON and all(w in _BARE for w in words[:i] + words[i + 1 :]):
            asked = True  # the whole clause is "agent", "a real person please"
        if asked and not negated:
            return True
    return False


def _chinese_asks_for_person(clause: str) -> bool:
    text = _ZH_POLITE.sub(" ", normalise(clause)).replace(" ", "")
    for found in _ZH_PERSON.finditer(text):
        before = text[: found.start()]
        before = before[before.rfind("我") + 1 :][-6:]  # from the last "I": "我不想等我要人工"
        if _ZH_IDENTITY.search(before) or _ZH_NEGATED_BEFORE.search(before):
            continue
        if _ZH_NEGATED_AFTER.search(text[found.end() :]):
            continue
        bare = not _ZH_BARE.sub("", text[: found.start()] + text[found.end() :])
        if bare or _ZH_ASK.search(before):
            return True
    return False


def wants_person(text: str, language: str = "") -> bool:
    """Whether the customer asks for a human. Both languages are checked whatever the
    call's language, because customers mix them ("我要 agent"); a negation near the
    request ("I don't want a person", "no agent needed", "不用转人工") cancels it, and a
    mention without a request ("a person called me") is not one."""
    for clause in _clauses(text):
        if _english_asks_for_person(_words(clause)) or _chinese_asks_for_person(clause):
            return True
    return False


_FAREWELL = frozenset({"bye", "goodbye", "byebye", "farewell"})
_CLOSING = _word_set("""
thank thanks thx you very much so a lot for your the help that thats is it all nothing else no ok okay great good
alright right fine perfect cheers have nice day im i am done more question questions then well oh um uh hi hello
yes yeah sure got understood really appreciate see later take care wonderful excellent
""")
_CLOSING_MARKERS = ("thank", "thx", "cheers", "thats all", "that is all", "thats it", "that is it",
                    "nothing else", "all done", "im done", "i am done", "no more question")
_ZH_FAREWELL = re.compile("再见|拜拜|再会|回见")
_ZH_CLOSING_MARKERS = re.compile("谢谢|多谢|感谢|没有了|没了|没有别的|没别的|没有其他|没事了|没问题了|就这些|就这样|"
                                 "先这样|不用了|好了|可以了|知道了|明白了|清楚了")
_ZH_CLOSING_FILLER = re.compile("好的|好|嗯|啊|哦|呀|了|啦|吧|你|您|非常|太|那就|那|的|我|行|问题|其他|别的|没有|真是")


def is_goodbye(text: str) -> bool:
    """Whether the customer is closing the conversation: an explicit farewell, or an
    utterance made only of thanks and "that's all" ("thank you that's all", "没有了，
    谢谢"). "Thank you, and how do I open an account?" and "我的卡没有了" are not."""
    normalised = normalise(text)
    pieces = _pieces(normalised)
    words = [p for p in pieces if not _is_cjk(p)]
    chinese = "".join(p for p in pieces if _is_cjk(p))
    if _FAREWELL & set(words) or "see you" in " ".join(words) or _ZH_FAREWELL.search(chinese):
        return True
    english = " ".join(words)
    marked = any(m in english for m in _CLOSING_MARKERS) or _ZH_CLOSING_MARKERS.search(chinese) is not None
    leftover = _ZH_CLOSING_FILLER.sub("", _ZH_CLOSING_MARKERS.sub("", chinese))
    return marked and not leftover and all(w in _CLOSING for w in words)
