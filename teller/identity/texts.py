"""What the customer is told, in each language the pages speak."""

from __future__ import annotations

PROMPTS: dict[str, dict[str, str]] = {
    "position": {"zh": "请正对摄像头，保持脸部在画面中央，光线充足。",
                 "en": "Please look straight at the camera, with your face in the middle and well lit."},
    "blink": {"zh": "请眨眨眼。", "en": "Please blink."},
    "turn_left": {"zh": "请向左转头。", "en": "Please turn your head to your left."},
    "turn_right": {"zh": "请向右转头。", "en": "Please turn your head to your right."},
    "open_mouth": {"zh": "请张张嘴。", "en": "Please open your mouth."},
    "nod": {"zh": "请点点头。", "en": "Please nod."},
}

RESULTS: dict[str, dict[str, str]] = {
    "passed": {"zh": "活体检测通过，谢谢。", "en": "Thank you, the check is complete."},
    "no_face": {"zh": "未检测到人脸，请正对摄像头。", "en": "We could not see your face. Please face the camera."},
    "several_faces": {"zh": "画面中有多张人脸，请确保只有您本人。", "en": "More than one face is in the picture. Only you, please."},
    "too_dark": {"zh": "光线太暗，请到明亮处。", "en": "It is too dark. Please move to better light."},
    "not_frontal": {"zh": "请正对摄像头。", "en": "Please look straight at the camera."},
    "position_timeout": {"zh": "未能完成准备，请重试。", "en": "We could not get ready in time. Please try again."},
    "challenge_timeout": {"zh": "未在规定时间内完成动作，请重试。", "en": "The actions were not completed in time. Please try again."},
    "face_lost": {"zh": "人脸离开了画面，请重试。", "en": "Your face left the picture. Please try again."},
    "call_ended": {"zh": "通话已结束。", "en": "The call has ended."},
    "video_ended": {"zh": "视频已中断。", "en": "Your video stopped."},
}

REASONS = tuple(k for k in RESULTS if k != "passed")


def text(table: dict[str, dict[str, str]], key: str) -> dict[str, str]:
    return dict(table.get(key) or {"zh": key, "en": key})
