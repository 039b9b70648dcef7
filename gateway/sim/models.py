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
