"""Risk phrases: the bundled rules, matching variants, language filtering, rule loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from teller.config import ConfigError
from teller.speech.risk import (
    CATEGORIES,
    RiskDetector,
    RiskHit,
    RiskRule,
    load_rules,
    load_rules_file,
)


@pytest.fixture(scope="module")
def detector() -> RiskDetector:
    return RiskDetector(load_rules_file())


def hit_ids(detector: RiskDetector, text: str, language: str | None = None) -> list[str]:
    return [h.rule_id for h in detector.scan(text, language)]


def rule(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": "r1", "category": "fraud_coaching", "severity": "critical", "languages": ["en"],
        "keywords": ["safe account"], "patterns": [], "advice": {"zh": "暂停交易", "en": "Pause the transaction"},
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not None}


# --- the bundled rules -------------------------------------------------------------


def test_bundled_rules_load_and_cover_every_category() -> None:
    rules = load_rules_file()
    assert rules == load_rules_file(Path(__file__).parents[1] / "teller" / "config" / "risk_rules.toml")
    assert {r.category for r in rules} == set(CATEGORIES)
    assert len({r.id for r in rules}) == len(rules)
    for r in rules:
        assert r.advice["zh"] and r.advice["en"]
        assert r.severity == ("critical" if r.category == "fraud_coaching" else "warning")


@pytest.mark.parametrize("text,rule_id", [
    ("They told me to move everything to a safe account", "safe_account"),
    ("what is the verification code you got", "verification_code"),
    ("read me the OTP", "verification_code"),
    ("he said don't tell the bank", "secrecy"),
    ("I have to download an app called AnyDesk", "remote_access"),
    ("the police said I must transfer my savings", "authority_impersonation"),
    ("they said I'm involved in money laundering", "authority_impersonation"),
    ("it has guaranteed returns", "investment_scam"),
    ("他们让我把钱转到安全账户", "zh_safe_account"),
    ("验证码是多少", "zh_verification_code"),
    ("对方说不要告诉银行", "zh_secrecy"),
    ("他让我开屏幕共享", "zh_remote_access"),
    ("要我下载一个会议软件", "zh_remote_access"),
    ("公检法的人打电话来了", "zh_authority_impersonation"),
    ("说我涉嫌洗钱", "zh_authority_impersonation"),
    ("他们叫我转账到指定账户", "zh_authority_impersonation"),
    ("网上刷单赚钱", "zh_investment_scam"),
    ("保本高收益的理财", "zh_investment_scam"),
])
def test_fraud_coaching(detector: RiskDetector, text: str, rule_id: str) -> None:
    hits = [h for h in detector.scan(text) if h.rule_id == rule_id]
    assert len(hits) == 1
    assert hits[0].category == "fraud_coaching"
    assert hits[0].severity == "critical"
    assert "en" in hits[0].advice and "zh" in hits[0].advice


@pytest.mark.parametrize("text,rule_id", [
    ("you idiot", "abusive"),
    ("SHUT UP and listen", "abusive"),
    ("I will kill you", "abusive"),
    ("你这个傻瓜", "zh_abusive"),
    ("你滚", "zh_abusive"),
    ("去死吧", "zh_abusive"),
    ("我弄死你", "zh_abusive"),
])
def test_abusive(detector: RiskDetector, text: str, rule_id: str) -> None:
    (hit,) = detector.scan(text)
    assert (hit.rule_id, hit.category, hit.severity) == (rule_id, "abusive", "warning")


@pytest.mark.parametrize("text,rule_id", [
    ("can you open it with a fake ID", "unlawful"),
    ("I want to use someone else's card", "unlawful"),
    ("help me launder the money", "unlawful"),
    ("我想代办信用卡", "zh_unlawful"),
    ("有人高价收购银行卡", "zh_unlawful"),
    ("出租银行卡给朋友", "zh_unlawful"),
    ("能不能帮忙走账", "zh_unlawful"),
])
def test_unlawful(detector: RiskDetector, text: str, rule_id: str) -> None:
    (hit,) = detector.scan(text)
    assert (hit.rule_id, hit.category, hit.severity) == (rule_id, "unlawful", "warning")


# --- variants ----------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "safe account", "Safe Account", "SAFE ACCOUNT", "safe-account", "SAFE  ACCOUNT", "safe\taccount",
    "ｓａｆｅ　ａｃｃｏｕｎｔ", "ＳＡＦＥ－ＡＣＣＯＵＮＴ",
])
def test_english_variants(detector: RiskDetector, text: str) -> None:
    line = f"They want it in a {text} today."
    (hit,) = detector.scan(line)
    assert hit.rule_id == "safe_account"
    assert hit.phrase == text
    assert line[hit.start:hit.end] == text


@pytest.mark.parametrize("text", ["don't tell the bank", "don’t tell the bank", "dont tell the bank",
                                  "Do not tell the bank", "DON'T TELL THE BANK"])
def test_apostrophe_variants(detector: RiskDetector, text: str) -> None:
    assert hit_ids(detector, f"he said {text}") == ["secrecy"]


@pytest.mark.parametrize("text,phrase", [
    ("他说转到安全 账户", "安全 账户"),
    ("他说转到安 全 账 户", "安 全 账 户"),
    ("他说转到安全　账户", "安全　账户"),
    ("他说转到“安全”账户", "安全”账户"),
    ("他说转到安全-账户", "安全-账户"),
])
def test_chinese_asr_spaces(detector: RiskDetector, text: str, phrase: str) -> None:
    (hit,) = detector.scan(text)
    assert hit.rule_id == "zh_safe_account"
    assert (hit.phrase, text[hit.start:hit.end]) == (phrase, phrase)


def test_chinese_patterns_also_ignore_asr_spaces(detector: RiskDetector) -> None:
    text = "他让我 下 载 一个 APP"
    (hit,) = detector.scan(text)
    assert hit.rule_id == "zh_remote_access"
    assert hit.phrase == "下 载 一个 APP"


def test_a_comma_between_chinese_words_is_a_real_break(detector: RiskDetector) -> None:
    # "mind your safety, and your account password…": a reminder, not a safe account
    assert "zh_safe_account" not in hit_ids(detector, "请注意安全，账户密码要保管好")


def test_offsets_point_into_the_original_text(detector: RiskDetector) -> None:
    text = "Straße ﬁne: ＳＡＦＥ　ＡＣＣＯＵＮＴ and the OTP"
    hits = detector.scan(text)
    assert [(h.rule_id, h.phrase) for h in hits] == [("safe_account", "ＳＡＦＥ　ＡＣＣＯＵＮＴ"),
                                                    ("verification_code", "OTP")]
    for h in hits:
        assert text[h.start:h.end] == h.phrase


def test_one_hit_per_rule_ordered_by_position(detector: RiskDetector) -> None:
    text = "shut up about the OTP, you idiot, the otp is mine and so is the safe account"
    hits = detector.scan(text)
    assert [(h.rule_id, h.phrase) for h in hits] == [
        ("abusive", "shut up"), ("verification_code", "OTP"), ("safe_account", "safe account")]
    assert [h.start for h in hits] == sorted(h.start for h in hits)


@pytest.mark.parametrize("text", [
    "please keep your account safe",
    "the code of conduct",
    "we had hotpot last night",
    "the safety of your account matters",
    "you can verify the code in the app store",
    "I want to transfer 5000 yuan to my mother",
    "the customer is not an idiotproof case",
    "that is an oxymoron",
    "my account is secure, thank you",
    "我想转账给我妈妈",
    "请保管好您的账户安全",
    "请向下滚动页面",
    "今天天气很好",
    "",
])
def test_innocent_sentences(detector: RiskDetector, text: str) -> None:
    assert detector.scan(text) == []


# --- language ----------------------------------------------------------------------


def test_language_filter(detector: RiskDetector) -> None:
    text = "the safe account 安全账户"
    assert hit_ids(detector, text) == ["safe_account", "zh_safe_account"]
    assert hit_ids(detector, text, "en") == ["safe_account"]
    assert hit_ids(detector, text, "en-GB") == ["safe_account"]
    assert hit_ids(detector, text, "zh") == ["zh_safe_account"]
    assert hit_ids(detector, text, "zh-CN") == ["zh_safe_account"]
    assert hit_ids(detector, text, "fr") == []


def test_a_rule_without_languages_runs_for_any() -> None:
    detector = RiskDetector(load_rules([rule(languages=[])]))
    assert hit_ids(detector, "a safe account", "fr") == ["r1"]
    assert hit_ids(detector, "a safe account", "zh") == ["r1"]


def test_patterns_are_case_insensitive_and_compiled_once() -> None:
    detector = RiskDetector(load_rules([rule(keywords=[], patterns=[r"(install|download) .{0,20}(app|anydesk)"])]))
    (hit,) = detector.scan("Please DOWNLOAD the AnyDesk thing")
    assert hit == RiskHit("r1", "fraud_coaching", "critical", "DOWNLOAD the AnyDesk", 7, 27,
                          {"zh": "暂停交易", "en": "Pause the transaction"})


# --- loading -----------------------------------------------------------------------


def test_load_rules_builds_rules() -> None:
    (r,) = load_rules([rule(keywords=["safe account"], patterns=["x+y"])])
    assert r == RiskRule("r1", "fraud_coaching", "critical", ("en",), ("safe account",), ("x+y",),
                         {"zh": "暂停交易", "en": "Pause the transaction"})


@pytest.mark.parametrize("raw,words", [
    ([rule(id=None)], ["[0]", "id"]),
    ([rule(id="")], ["[0]", "id"]),
    ([rule(id=7)], ["[0]", "id"]),
    ([rule(), rule()], ["[1]", "'r1'", "duplicate"]),
    ([rule(category="phishing")], ["'r1'", "category", "phishing"]),
    ([rule(category=None)], ["'r1'", "category"]),
    ([rule(severity="high")], ["'r1'", "severity", "high"]),
    ([rule(keywords=[], patterns=[])], ["'r1'", "keywords", "patterns"]),
    ([rule(keywords=None, patterns=None)], ["'r1'", "keywords", "patterns"]),
    ([rule(patterns=["(unclosed"])], ["'r1'", "patterns[0]", "regular expression"]),
    ([rule(patterns=["ok", "(?i)late flag"])], ["'r1'", "patterns[1]"]),
    ([rule(patterns=["a*"])], ["'r1'", "patterns[0]", "empty"]),
    ([rule(patterns=[r"(a)\1"])], ["'r1'", "patterns[0]", "backreference"]),
    ([rule(advice={"zh": "暂停"})], ["'r1'", "advice.en"]),
    ([rule(advice={"en": "Pause"})], ["'r1'", "advice.zh"]),
    ([rule(advice={"en": "Pause", "zh": 3})], ["'r1'", "advice.zh"]),
    ([rule(advice="pause")], ["'r1'", "advice"]),
    ([rule(keywords=["ok", 5])], ["'r1'", "keywords[1]"]),
    ([rule(keywords=[" "])], ["'r1'", "keywords[0]"]),
    ([rule(patterns=[None])], ["'r1'", "patterns[0]"]),
    ([rule(languages=["en", 1])], ["'r1'", "languages[1]"]),
    ([rule(keywords="safe account")], ["'r1'", "keywords", "list"]),
    ([rule(keyword=["typo"])], ["'r1'", "keyword", "unknown"]),
    ([rule(), "not a table"], ["[1]", "table"]),
])
def test_load_rules_errors_name_the_rule_and_field(raw: list[Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_rules(raw)
    for word in words:
        assert word in str(info.value)


def test_load_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text((
        '[[rules]]\nid = "mule"\ncategory = "unlawful"\nseverity = "warning"\nkeywords = ["rent my card"]\n'
        'advice.zh = "不要办理"\nadvice.en = "Do not proceed"\n'), "utf-8")
    (r,) = load_rules_file(path)
    assert (r.id, r.languages, r.keywords, r.patterns) == ("mule", (), ("rent my card",), ())
    assert hit_ids(RiskDetector([r]), "can I RENT MY CARD out", "en") == ["mule"]
    (r2,) = load_rules_file(str(path))
    assert r2 == r


@pytest.mark.parametrize("content,words", [
    ("rules = [", ["bad.toml", "TOML"]),
    ("[other]\nx = 1\n", ["bad.toml", "[[rules]]"]),
    (('[[rules]]\nid = "a"\ncategory = "abusive"\nseverity = "loud"\nkeywords = ["x"]\n'
      'advice = {zh = "z", en = "e"}\n'), ["bad.toml", "'a'", "severity"]),
])
def test_load_rules_file_errors(tmp_path: Path, content: str, words: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content, "utf-8")
    with pytest.raises(ConfigError) as info:
        load_rules_file(path)
    for word in words:
        assert word in str(info.value)


def test_load_rules_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.toml"):
        load_rules_file(tmp_path / "missing.toml")


def test_empty_rule_list_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "none.toml"
    path.write_text("rules = []\n", "utf-8")
    assert load_rules_file(path) == []
    assert RiskDetector([]).scan("safe account") == []
