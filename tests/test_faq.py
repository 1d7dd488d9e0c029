"""The FAQ knowledge base and the customer intents the digital employee acts on.

The paraphrases are written the way Whisper hands them over: no punctuation, "um",
"Hi," in front, a misheard word. Each must reach the entry a person would pick, and a
question the bank cannot answer must reach none.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

from teller.config import ConfigError
from teller.digital_human.faq import (
    FaqBase,
    FaqEntry,
    FaqError,
    is_goodbye,
    tokens,
    wants_person,
)
from teller.errors import TellerError


@pytest.fixture(scope="module")
def base() -> FaqBase:
    return FaqBase.load(None)


def catalogue_skills() -> set[str]:
    text = resources.files("teller.config").joinpath("catalogue.toml").read_text("utf-8")
    return {business["skill"] for business in tomllib.loads(text)["business"]}


# -- the shipped base ------------------------------------------------------------------


def test_the_shipped_base_covers_both_languages_and_names_real_skills(base: FaqBase) -> None:
    assert len(base.entries) >= 15
    assert 0 < base.threshold <= 1
    skills = catalogue_skills()
    assert base.default_skill in skills
    for entry in base.entries:
        assert entry.skill in skills, entry.id
        assert set(entry.questions) == set(entry.answers) == {"zh", "en"}, entry.id
        assert all(3 <= len(variants) <= 6 for variants in entry.questions.values()), entry.id


def test_shipped_answers_can_be_spoken(base: FaqBase) -> None:
    """TTS reads them aloud: short, no links, no list markup."""
    for entry in base.entries:
        for language, answer in entry.answers.items():
            assert "http" not in answer and "\n" not in answer and "- " not in answer, (entry.id, language)
            sentences = answer.count(".") if language == "en" else answer.count("。")
            assert 1 <= sentences <= 3 and len(answer) <= 260, (entry.id, language, answer)


def test_every_shipped_variant_finds_its_own_entry(base: FaqBase) -> None:
    """What an operator breaks by adding an entry whose variants overlap another's."""
    for entry in base.entries:
        for language, variants in entry.questions.items():
            for variant in variants:
                match = base.match(variant, language)
                assert match is not None and match.entry.id == entry.id, (variant, match)


# -- matching ------------------------------------------------------------------------


@pytest.mark.parametrize(("question", "expected"), [
    ("What are your opening hours?", "opening_hours"),
    ("Hi, when does the bank open", "opening_hours"),
    ("um what time does the branch close today", "opening_hours"),
    ("is the bank open on sunday", "opening_hours"),
    ("how can i open a bank account", "open_account"),
    ("I'd like to open an account for my son", "open_account"),
    ("hi i lost my card", "lost_card"),
    ("hello um my card was stolen yesterday", "lost_card"),
    ("I lost my bang card", "lost_card"),  # misheard "bank"
    ("what's the most i can transfer in a day", "transfer_limit"),
    ("how much does it cost to transfer money to a other bank", "transfer_fees"),
    ("Hi. What are the fees for transfers?", "transfer_fees"),
    ("I want a loan to buy fertilizer", "farm_loan"),
    ("um how do i apply for a agriculture loan", "farm_loan"),
    ("what's the interest rate on a lone", "loan_rates"),  # misheard "loan"
    ("can i repay my loan early", "loan_repayment"),
    ("i can't log into the app", "mobile_login"),
    ("uh how do I reset my pin", "reset_password"),
    ("somebody called me and asked for the verification code", "fraud_warning"),
    ("what interest do you pay on savings", "deposit_rates"),
    ("when will my pension be paid", "pension_collection"),
    ("my id card has expired", "id_card_renewal"),
    ("how do i activate a new card", "card_activation"),
    ("how much money do i have in my account", "check_balance"),
    ("where can i take out cash", "cash_withdrawal"),
])
def test_english_paraphrases_find_their_entry(base: FaqBase, question: str, expected: str) -> None:
    match = base.match(question, "en")
    assert match is not None and match.entry.id == expected, (question, base.rank(question, "en")[:2])
    assert match.language == "en" and match.answer == match.entry.answers["en"]
    assert base.threshold <= match.score <= 1.0 + 1e-9


@pytest.mark.parametrize(("question", "expected"), [
    ("你好请问银行几点开门", "opening_hours"),
    ("你们几点关门", "opening_hours"),
    ("您好，请问营业时间", "opening_hours"),
    ("我想开个户", "open_account"),
    ("我的卡丢了", "lost_card"),
    ("卡丢了咋办", "lost_card"),
    ("帮我冻结一下银行卡", "lost_card"),
    ("转账额度怎么调高", "transfer_limit"),
    ("跨行汇款要钱吗", "transfer_fees"),
    ("我想贷款买化肥", "farm_loan"),
    ("贷款利率高吗", "loan_rates"),
    ("贷款逾期会怎样", "loan_repayment"),
    ("手机银行登陆不了", "mobile_login"),  # 登陆 for 登录, as ASR and people write it
    ("密码忘记了", "reset_password"),
    ("有人问我要验证码", "fraud_warning"),
    ("定期存款利率多少", "deposit_rates"),
    ("养老金啥时候发", "pension_collection"),
    ("身份证过期了", "id_card_renewal"),
    ("新卡要怎么激活", "card_activation"),
    ("卡里有多少钱", "check_balance"),
    ("附近有取款机吗", "cash_withdrawal"),
])
def test_chinese_paraphrases_find_their_entry(base: FaqBase, question: str, expected: str) -> None:
    match = base.match(question, "zh")
    assert match is not None and match.entry.id == expected, (question, base.rank(question, "zh")[:2])
    assert match.language == "zh" and match.answer == match.entry.answers["zh"]


@pytest.mark.parametrize(("question", "language"), [
    ("what's the weather on Mars", "en"),
    ("Which football team will win the cup?", "en"),
    ("Can you sing me a song about the moon?", "en"),
    ("my cow is sick what should i do", "en"),
    ("what is the exchange rate for us dollars", "en"),
    ("A man on the phone told me to move all my money to a safe account today.", "en"),
    ("um", "en"),
    ("", "en"),
    ("给我讲个笑话", "zh"),
    ("今天天气怎么样", "zh"),
    ("美元汇率是多少", "zh"),
    ("现在几点了", "zh"),
    ("嗯。", "zh"),
])
def test_questions_the_bank_cannot_answer_get_none(base: FaqBase, question: str, language: str) -> None:
    assert base.match(question, language) is None, base.rank(question, language)[:1]


def test_full_width_text_and_region_tags_are_folded(base: FaqBase) -> None:
    match = base.match("ｗｈａｔ　ａｒｅ　ｙｏｕｒ　ｏｐｅｎｉｎｇ　ｈｏｕｒｓ？", "en-GB")
    assert match is not None and match.entry.id == "opening_hours" and match.language == "en"
    match = base.match("银行卡丢了！！", "zh-CN")
    assert match is not None and match.entry.id == "lost_card" and match.language == "zh"


def test_tokens_are_stems_and_bigrams_without_filler() -> None:
    assert tokens("Um, what are your opening hours?") == ["open", "hour"]
    assert tokens("I'd like my ID card") == ["id", "card"]
    assert tokens("请问营业时间") == ["营业", "业时", "时间", "营", "业", "时", "间"]


def test_a_language_an_entry_lacks_falls_back_to_its_other_variants() -> None:
    base = FaqBase([
        FaqEntry("hours", "service", {"en": ["What are your opening hours?"]}, {"en": "Nine to five."}),
        FaqEntry("loss", "cards", {"zh": ["银行卡丢了"], "en": ["I lost my card"]},
                 {"zh": "请挂失。", "en": "Freeze it."}),
    ])
    match = base.match("opening hours", "zh")
    assert match is not None and match.entry.id == "hours" and (match.language, match.answer) == ("en", "Nine to five.")
    assert base.match("I lost my card", "zh") is None  # the entry has zh variants, so only those count
    match = base.match("银行卡丢了", "zh")
    assert match is not None and match.answer == "请挂失。"


def test_the_threshold_in_the_file_decides(tmp_path: Path) -> None:
    path = tmp_path / "faq.toml"
    entry = '[[entry]]\nid = "hours"\nquestions.en = ["When does the branch open on Saturday?"]\nanswers.en = "At nine."\n'
    path.write_text("threshold = 0.9\n" + entry, "utf-8")
    assert FaqBase.load(path).match("when do you open", "en") is None
    path.write_text("threshold = 0.2\n" + entry, "utf-8")
    strict = FaqBase.load(str(path))
    assert strict.match("when do you open", "en") is not None
    assert strict.default_skill == "service" and strict.entries[0].skill == "service"


# -- intents -------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "I want a person", "I want to talk to a person.", "talk to a real person", "agent", "Human!", "representative",
    "operator please", "Hi, can I speak to a human?", "um I'd like to speak with one of your agents",
    "could you connect me to customer service", "put me through to someone", "can I have a person please",
    "I don't know what to do, I want a person", "i dont know what to do i want a person",
    "no I want a real person", "I want an agent not a robot",
])
def test_english_requests_for_a_person(text: str) -> None:
    assert wants_person(text, "en")


@pytest.mark.parametrize("text", [
    "I don't want a person", "no agent needed", "I do not need to talk to an agent", "an agent is not necessary",
    "I'd rather not talk to a person", "no need for an agent", "are you a real person?",
    "a person called me and asked for my code", "I have a person on the phone", "I want to transfer money to a person",
    "the agent said my loan was approved", "my son is a bank teller", "what are your opening hours",
])
def test_english_non_requests(text: str) -> None:
    assert not wants_person(text, "en")


@pytest.mark.parametrize("text", [
    "人工", "转人工", "我要转人工", "真人", "人工客服", "找客服", "我要找柜员", "我想和真人说话", "请帮我转人工服务",
    "给我转个人工吧", "我不知道怎么办我要人工", "不好意思，我要人工", "我要人工不要机器人", "是不是可以转人工",
])
def test_chinese_requests_for_a_person(text: str) -> None:
    assert wants_person(text, "zh")


@pytest.mark.parametrize("text", [
    "不用转人工", "我不要人工", "不需要人工客服", "人工就不用了", "别转人工", "我不想找客服", "你是真人吗",
    "有人冒充客服给我打电话", "客服给我打电话说我的卡冻结了", "人工智能是什么", "营业时间是几点",
])
def test_chinese_non_requests(text: str) -> None:
    assert not wants_person(text, "zh")


def test_a_request_in_the_other_language_still_counts() -> None:
    assert wants_person("我要 agent", "zh") and wants_person("please, 转人工", "en")


@pytest.mark.parametrize("text", [
    "bye", "Bye-bye.", "goodbye", "thank you that's all", "Thank you, that's all.", "no thank you",
    "ok thank you very much", "thank you so much for your help", "see you",
    "再见", "没有了", "没有了，谢谢", "谢谢", "好的谢谢", "拜拜", "嗯没有了谢谢", "好的，知道了，谢谢", "就这些",
])
def test_goodbyes(text: str) -> None:
    assert is_goodbye(text)


@pytest.mark.parametrize("text", [
    "thank you, and how do I open an account?", "thanks what about loans", "Thanks for watching!", "ok", "no",
    "谢谢，我还想问一下贷款", "我的卡没有了", "好的", "没有", "我要转人工",
])
def test_not_goodbyes(text: str) -> None:
    assert not is_goodbye(text)


# -- invalid files -------------------------------------------------------------------

GOOD_ENTRY = """
[[entry]]
id = "hours"
skill = "service"
questions.en = ["When do you open?"]
questions.zh = ["几点开门？"]
answers.en = "At nine."
answers.zh = "九点。"
"""


@pytest.mark.parametrize(("text", "code", "said"), [
    (GOOD_ENTRY + GOOD_ENTRY, "faq_duplicate_id", "'hours' is used twice"),
    ('[[entry]]\nid = "hours"\nquestions.en = ["When do you open?"]\n', "faq_missing_answer", "no answers"),
    (GOOD_ENTRY.replace('answers.zh = "九点。"\n', ""), "faq_missing_answer", "no answer in ['zh']"),
    (GOOD_ENTRY.replace('["When do you open?"]', '"When do you open?"'), "faq_invalid", "questions.en"),
    (GOOD_ENTRY.replace('id = "hours"', "id = 7"), "faq_invalid", "id must be a non-empty string"),
    (GOOD_ENTRY.replace('answers.en = "At nine."', "answers.en = 9"), "faq_invalid", "answers.en"),
    ('threshold = "high"\n' + GOOD_ENTRY, "faq_invalid", "threshold"),
    ("threshold = 1.5\n" + GOOD_ENTRY, "faq_invalid", "threshold"),
    (GOOD_ENTRY.replace("answers.en", "answer.en"), "faq_invalid", "unknown key(s) ['answer']"),
    (GOOD_ENTRY.replace('["When do you open?"]', '["How do I?"]'), "faq_invalid", "only stop words"),
    ('default_skill = "service"\n', "faq_invalid", "no [[entry]]"),
    ("[[entry]\nid =", "faq_syntax", "not valid TOML"),
])
def test_an_unusable_file_is_refused_with_a_code(tmp_path: Path, text: str, code: str, said: str) -> None:
    path = tmp_path / "faq.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(FaqError) as caught:
        FaqBase.load(path)
    error = caught.value
    assert error.code == code and said in error.message and str(path) in error.message
    assert isinstance(error, ConfigError) and isinstance(error, TellerError)
    assert error.to_json()["details"]["source"] == str(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FaqError) as caught:
        FaqBase.load(tmp_path / "nowhere.toml")
    assert caught.value.code == "faq_not_found" and "nowhere.toml" in caught.value.message
