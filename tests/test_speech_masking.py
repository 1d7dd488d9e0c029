"""PII masking of transcript lines: written, spoken and mixed numbers, and what stays."""

from __future__ import annotations

import pytest

from teller.speech.masking import Masked, PiiSpan, find_pii, mask

CARD = "6222021234567894"  # passes Luhn
CARD_BAD_LUHN = "6222021234567890"
ID18 = "11010519491231002X"  # valid birth date and MOD 11-2 check digit
ID18_DIGITS = "110105194912310021"  # valid date, wrong check digit: still an ID
ID15 = "110105491231002"
MOBILE = "13812345678"


def kinds(text: str) -> list[tuple[str, str]]:
    return [(s.kind, s.digits) for s in find_pii(text)]


def assert_spans_map_back(text: str, spans: list[PiiSpan] | tuple[PiiSpan, ...]) -> None:
    """Each span's original text holds exactly its digits, and spans never overlap."""
    zh = str.maketrans("零〇一幺二两三四五六七八九", "0011223456789")
    words = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
             "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
    end = 0
    for span in spans:
        assert span.start >= end
        end = span.end
        original = text[span.start:span.end]
        assert original.strip() == original and original
        assert original[0] not in " -.," and original[-1] not in " -.,"
        if original.isascii() and not any(c.isalpha() and c not in "xX" for c in original):
            written = "".join(c for c in original if c.isdigit() or c in "xX").upper()
            assert written.endswith(span.digits)
        elif not any(c.isascii() and c.isalpha() and c not in "xX" for c in original):
            assert span.digits in "".join(c for c in original.translate(zh) if c.isdigit() or c in "xX")
        else:
            said = "".join(words.get(w.lower(), w) for w in original.replace("-", " ").replace(",", " ").split())
            assert span.digits.rstrip("X") in said.translate(zh)


# --- written -----------------------------------------------------------------------


@pytest.mark.parametrize("written", [CARD, "6222 0212 3456 7894", "6222-0212-3456-7894", "6222.0212.3456.7894"])
def test_written_card(written: str) -> None:
    text = f"my card is {written}, thanks"
    m = mask(text)
    assert m.text == "my card is [card ****7894], thanks"
    (span,) = m.spans
    assert span == PiiSpan("bank_card", 11, 11 + len(written), CARD, "[card ****7894]")
    assert text[span.start:span.end] == written


def test_card_lengths_13_to_19() -> None:
    assert kinds("card 4222222222222") == [("bank_card", "4222222222222")]  # 13 digits, Luhn
    assert kinds("card 6222021234567890123") == [("bank_card", "6222021234567890123")]
    assert kinds("card 62220212345678901234") == []  # 20 digits is no card


def test_a_16_digit_number_failing_luhn_is_still_masked_as_a_card() -> None:
    # Chosen rule: ASR mishears single digits, so a failed Luhn check means a
    # misheard card, not an innocent number. Luhn only decides ties.
    assert mask(f"card {CARD_BAD_LUHN}").text == "card [card ****7890]"


@pytest.mark.parametrize("written,digits", [
    (ID18, ID18),
    (ID18.lower(), ID18),
    ("110105 19491231 002X", ID18),
    ("110105-19491231-002x", ID18),
    (ID18_DIGITS, ID18_DIGITS),
    (ID15, ID15),
])
def test_written_id(written: str, digits: str) -> None:
    m = mask(f"身份证号{written}。")
    assert m.text == f"身份证号[ID ****{digits[-4:]}]。"
    assert [(s.kind, s.digits) for s in m.spans] == [("id_number", digits)]


def test_18_digits_with_a_check_digit_but_no_date_is_an_id() -> None:
    base = "11010599999999001"  # no valid date at positions 7-14
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(base, weights)) % 11]
    assert check != "X"
    assert kinds(base + check) == [("id_number", base + check)]


def test_18_digits_that_look_like_no_id_are_a_card() -> None:
    number = "622202123456789018"  # positions 7-14 "12345678" is no date
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    assert "10X98765432"[sum(int(c) * w for c, w in zip(number, weights)) % 11] != number[-1]
    assert kinds(number) == [("bank_card", number)]


@pytest.mark.parametrize("written", [MOBILE, "138 1234 5678", "138-1234-5678", "138.1234.5678", "１３８１２３４５６７８"])
def test_written_mobile(written: str) -> None:
    m = mask(f"call me on {written} please")
    assert m.text == "call me on [phone ****5678] please"
    assert m.spans[0].digits == MOBILE


@pytest.mark.parametrize("written", ["+86 138 1234 5678", "+8613812345678", "0086 13812345678", "+86-138-1234-5678"])
def test_mobile_with_country_code(written: str) -> None:
    text = f"number {written}."
    m = mask(text)
    assert m.text == "number [phone ****5678]."
    (span,) = m.spans
    assert span.digits == MOBILE  # the national number
    assert text[span.start:span.end] == written  # the + goes too


@pytest.mark.parametrize("written,digits", [
    ("010-12345678", "01012345678"),
    ("0755 1234 5678", "075512345678"),
    ("021-87654321", "02187654321"),
    ("0571-8765432", "05718765432"),
    ("400-820-8820", "4008208820"),
])
def test_landline(written: str, digits: str) -> None:
    assert kinds(f"office {written}") == [("phone", digits)]


def test_local_number_needs_a_phone_cue() -> None:
    assert mask("phone 8765 4321").text == "phone [phone ****4321]"
    assert mask("Call me on 7654321").text == "Call me on [phone ****4321]"
    assert mask("我的电话是87654321").text == "我的电话是[phone ****4321]"
    assert mask("手机 7654321").text == "手机 [phone ****4321]"
    assert mask("reference 87654321").text == "reference 87654321"
    # the cue belongs to the number that follows it, not to the next one
    assert mask("phone 13812345678 and reference 7654321").text == "phone [phone ****5678] and reference 7654321"
    assert mask("phone [phone ****5678] 1234567").text == "phone [phone ****5678] 1234567"


def test_two_numbers_side_by_side_are_two_spans() -> None:
    assert kinds(f"{CARD} {CARD}") == [("bank_card", CARD), ("bank_card", CARD)]
    assert kinds("13812345678 13987654321") == [("phone", MOBILE), ("phone", "13987654321")]


# --- spoken ------------------------------------------------------------------------


def test_spoken_english_mobile() -> None:
    text = "it's one three eight, one two three four, five six seven eight"
    m = mask(text)
    assert m.text == "it's [phone ****5678]"
    assert m.spans[0].digits == MOBILE
    assert_spans_map_back(text, m.spans)


def test_spoken_english_with_hyphens_oh_double_and_triple() -> None:
    assert kinds("one-three-eight-one-two-three-four-five-six-seven-eight") == [("phone", MOBILE)]
    # 0 1 0 | 8 8 | 5 5 5 | 1 2 3 → 010 88555123, a Beijing landline
    assert kinds("oh one oh double eight triple five one two three") == [("phone", "01088555123")]
    assert kinds("O one O, double 8, triple five, 1 2 3") == [("phone", "01088555123")]


def test_spoken_english_card_and_id() -> None:
    card = "six two two two zero two one two three four five six seven eight nine four"
    assert kinds(f"my card number is {card}.") == [("bank_card", CARD)]
    id_words = "one one zero one zero five one nine four nine one two three one zero zero two X"
    assert kinds(f"ID {id_words}") == [("id_number", ID18)]


def test_spoken_chinese_mobile() -> None:
    assert kinds("幺三八一二三四五六七八") == [("phone", MOBILE)]
    assert kinds("我的手机是幺三八 一二三四，五六七八") == [("phone", MOBILE)]
    assert kinds("幺三八、一二三四、五六七八") == [("phone", MOBILE)]
    assert kinds("幺三八两三四五六七八九") == [("phone", "13823456789")]


def test_spoken_chinese_card_and_id() -> None:
    assert mask("卡号六二二二零二一二三四五六七八九四").text == "卡号[card ****7894]"
    assert mask("卡号六二二二 〇二一二 三四五六 七八九四").text == "卡号[card ****7894]"
    assert kinds("身份证号码是幺幺零幺零五幺九四九幺二三幺零零二X") == [("id_number", ID18)]


def test_mixed_written_and_spoken() -> None:
    text = "card six two two 2 0 2 1 two three four five six seven eight nine four"
    m = mask(text)
    assert m.text == "card [card ****7894]"
    assert m.spans[0].digits == CARD
    assert_spans_map_back(text, m.spans)
    assert kinds("幺三八 1234 5678") == [("phone", MOBILE)]
    assert kinds("one three eight 1234 5678") == [("phone", MOBILE)]


def test_spoken_runs_that_fit_no_class_are_still_masked() -> None:
    # up to twelve spoken digits that fit nothing: a phone; more: a card
    assert kinds("one two three four five six seven") == [("phone", "1234567")]
    assert kinds("九八七六五四三二一") == [("phone", "987654321")]
    assert kinds("nine eight seven six five four three two one nine") == [("phone", "9876543219")]
    text = "九八七六五四三二一" * 3  # 27 digits: longer than any class
    m = mask(text)
    assert m.text.startswith("[card ****") and m.text.endswith("]")
    assert "".join(s.digits for s in m.spans) == "987654321" * 3


def test_a_stray_spoken_digit_does_not_swallow_a_written_number() -> None:
    m = mask("第一 13812345678")
    assert m.text == "第一 [phone ****5678]"


# --- what must stay ----------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "please transfer 5000 yuan",
    "the fee is 1,000.50 and the limit 1,000,000",
    "amount 1000000.50",
    "in 2024 we opened the branch",
    "meet at 10:30 or 14:45:00",
    "on 2024-05-01 or 2024.05.01",
    "PIN 123456",
    "the reference 87654321 is on the letter",
    "one two three four five six",
    "Oh, I see. One moment, two of them",
    "我要取五千元，两笔",
    "一二三四五六",
    "hello there",
    "",
])
def test_ordinary_numbers_stay(text: str) -> None:
    assert mask(text) == Masked(text, ())


def test_a_date_next_to_a_number_does_not_join_it() -> None:
    assert mask("2024-05-01 13812345678").text == "2024-05-01 [phone ****5678]"
    assert mask("10:30 13812345678").text == "10:30 [phone ****5678]"
    assert mask("1,000 13812345678").text == "1,000 [phone ****5678]"


def test_a_fraction_is_not_part_of_the_number() -> None:
    assert mask(f"card {CARD}.12").text == "card [card ****7894].12"


# --- the result --------------------------------------------------------------------


def test_replacement_keeps_the_last_four_only() -> None:
    m = mask(f"card {CARD}, id {ID18}, phone {MOBILE}")
    assert m.text == "card [card ****7894], id [ID ****002X], phone [phone ****5678]"
    assert [s.replacement for s in m.spans] == ["[card ****7894]", "[ID ****002X]", "[phone ****5678]"]
    for span in m.spans:
        assert span.digits[:-4] not in m.text


@pytest.mark.parametrize("text", [
    f"card {CARD}, id {ID18}, phone {MOBILE}",
    "it's one three eight, one two three four, five six seven eight",
    "卡号六二二二零二一二三四五六七八九四，手机幺三八一二三四五六七八",
    "call 0755 1234 5678 or phone 7654321, card 6222 0212 3456 7894 ok",
    "+86 138 1234 5678 X 1234567",
])
def test_spans_map_back_to_the_original(text: str) -> None:
    m = mask(text)
    assert m.spans
    assert_spans_map_back(text, m.spans)
    rebuilt, pos = [], 0
    for span in m.spans:
        rebuilt += [text[pos:span.start], span.replacement]
        pos = span.end
    assert "".join(rebuilt) + text[pos:] == m.text


@pytest.mark.parametrize("text", [
    f"card {CARD}, id {ID18}, phone {MOBILE}",
    "it's one three eight, one two three four, five six seven eight, and 7654321",
    "call 6222021234567890123 or 1234567",
    "phone: 13812345678, 1234567",
    "身份证号码是幺幺零幺零五幺九四九幺二三幺零零二X 电话 7654321",
    "ID 110105 19491231 002x then 12 34 56",
    "+86 138 1234 5678",
])
def test_masking_masked_text_changes_nothing(text: str) -> None:
    once = mask(text)
    assert once.spans
    assert mask(once.text) == Masked(once.text, ())


def test_long_dictation_is_masked_whole() -> None:
    text = "一二三四五六七八九" * 50
    m = mask(text)
    assert m.text.startswith("[card ****") and m.text.endswith("]")
    assert len(m.spans) == 1


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # How Whisper writes a dictated card: grouped like an amount, or run together.
        ("My card number is 6,220-212-3,456-7,890.", "My card number is [card ****7890]."),
        ("My card number is 622202123000.", "My card number is [card ****3000]."),
        ("My card number is 6,222.021.23456.78090.", "My card number is [card ****8090]."),
        ("account 12345678901", "account [phone ****8901]"),
        ("the code is 123-456-789", "the code is [phone ****6789]"),
    ],
)
def test_numbers_written_in_any_grouping_are_masked(text: str, masked: str) -> None:
    assert mask(text).text == masked
    assert mask(masked).text == masked


@pytest.mark.parametrize("text", ["It costs 1,250,000 yuan", "1,250,000,000 in total", "Amount 12,345.67 dollars", "0.123456789"])
def test_large_amounts_stay(text: str) -> None:
    assert mask(text).text == text
