"""Local speech recognition on faster-whisper (CTranslate2): whisper tiny.en by default.

The gateway side: request checks, then the model's worker process, where
``providers/local/whisper_engine.py`` runs CTranslate2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from providers.base import ErrorKind, ProviderError, TranscribeRequest, Transcript
from providers.local.lifecycle import LocalModels
from providers.local.models import WHISPER_BASE_PACKAGE, multilingual_base_dir, whisper_dir


class FasterWhisperProvider(LocalModels):
    name = "local"
    section = "asr"
    kind = "ASR"
    engine_module = "faster_whisper"
    engine_package = "faster-whisper"
    engine_class = "providers.local.whisper_engine:WhisperEngine"

    def _locate(self, name: str, config: Any) -> Path:
        if config.path is None and config.package == WHISPER_BASE_PACKAGE:
            return multilingual_base_dir(name, self.settings.data_dir, prepare=False)
        return whisper_dir(name, config.path, config.package)

    def _options(self, name: str, config: Any) -> dict[str, Any]:
        return {"data_dir": str(self.settings.data_dir)}

    async def transcribe(self, request: TranscribeRequest) -> Transcript:
        audio = request.audio
        if not audio.pcm or audio.sample_rate <= 0:
            raise ProviderError(ErrorKind.BAD_REQUEST, "the audio is empty", code="InvalidAudio")
        info = await self.model(request.model)
        language = (request.language or "").strip().lower() or None
        if language and not info["multilingual"] and language != "en":
            raise ProviderError(
                ErrorKind.UNAVAILABLE,
                f"local ASR model '{request.model}' is English-only and cannot transcribe "
                f"'{language}'; configure a multilingual Whisper model (see README: local models)",
                code="UnsupportedLanguage",
            )
        return await self.call(request.model, "transcribe", request, language)
