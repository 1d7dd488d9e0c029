"""What the digital employee says of its own accord, in each language it speaks."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "name": "Digital assistant",
        "greeting": "Hello, I'm the bank's digital assistant. How can I help you today? "
                    "You can ask for a person at any time.",
        "not_understood": "Sorry, I can't answer that yet. Could you ask another way, or ask for a person?",
        "handover_asked": "Of course. I'm connecting you to a colleague now. Please hold on.",
        "handover_not_understood": "Let me bring in a colleague who can help with that. Please hold on.",
        "handover_risk": "For your safety, a colleague will take over now. Please do not share any codes "
                         "or passwords. Please hold on.",
        "handover_llm": "A colleague can help you better with this. I'm connecting you now.",
        "handover_unavailable": "I'm connecting you to a colleague. Please hold on.",
        "waiting": "A colleague will be with you shortly. You can keep asking me questions while you wait.",
        "goodbye": "Thank you for calling. Goodbye!",
    },
    "zh": {
        "name": "数字员工",
        "greeting": "您好，我是银行的数字员工，请问有什么可以帮您？您随时可以说“转人工”。",
        "not_understood": "抱歉，这个问题我还不会回答。您可以换个说法，或者说“转人工”。",
        "handover_asked": "好的，正在为您转接人工客服，请稍候。",
        "handover_not_understood": "这个问题我请同事来帮您，正在转接，请稍候。",
        "handover_risk": "为了您的资金安全，现在由同事为您服务。请不要向任何人透露验证码或密码，请稍候。",
        "handover_llm": "这个问题由同事为您解答更合适，正在为您转接。",
        "handover_unavailable": "正在为您转接人工客服，请稍候。",
        "waiting": "同事马上就到，您也可以继续问我问题。",
        "goodbye": "感谢您的来电，再见！",
    },
}


def text(key: str, language: str) -> str:
    return TEXTS.get(language, TEXTS["en"]).get(key) or TEXTS["en"][key]
