"""Which model names each simulated service answers; anything else gets Bailian's ModelNotFound."""

from __future__ import annotations

GENERATION_PREFIXES = (
    "qwen",
    "qwq",
    "qvq",
    "deepseek",
    "llama",
    "baichuan",
    "chatglm",
    "glm",
    "kimi",
    "moonshot",
    "yi-",
    "abab",
    "internlm",
    "sim-",
)
HTTP_ASR_PREFIXES = ("qwen3-asr", "qwen-asr", "qwen-audio-asr")
HTTP_TTS_PREFIXES = ("qwen-tts", "qwen3-tts")
WS_ASR_PREFIXES = ("paraformer", "fun-asr")
WS_TTS_PREFIXES = ("cosyvoice",)
SAMBERT_PREFIXES = ("sambert",)


def is_generation_model(model: str) -> bool:
    if model.startswith(HTTP_ASR_PREFIXES + HTTP_TTS_PREFIXES):
        return False
    return model.startswith(GENERATION_PREFIXES)


def model_not_found_message(model: str) -> str:
    return f"Model not exist: {model}."


#: CosyVoice system voices the simulator knows (Bailian's names, v1 and v2 families). Like the
#: real service, a run-task naming any other voice fails with InvalidParameter.
COSYVOICE_VOICES = frozenset(
    {
        "longxiaochun",
        "longxiaochun_v2",
        "longxiaoxia",
        "longxiaoxia_v2",
        "longxiaochen_v2",
        "longxiaobai_v2",
        "longlaotie_v2",
        "longshu",
        "longshu_v2",
        "longjing_v2",
        "longwan",
        "longwan_v2",
        "longtong_v2",
        "longfei_v2",
        "longxiang_v2",
        "longcheng_v2",
        "longhua_v2",
        "longyue_v2",
        "longze_v2",
        "loongstella",
        "loongstella_v2",
        "loongbella",
        "loongbella_v2",
    }
)
