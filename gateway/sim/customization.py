"""``POST /api/v1/services/audio/tts/customization``: voice enrollment, by the envelope's model.

``voice-enrollment`` clones for CosyVoice (gateway/sim/voice_enrollment.py), ``qwen-voice-enrollment``
for Qwen-TTS (gateway/sim/qwen_voice_enrollment.py); both answer ``{"output", "usage", "request_id"}``
and Bailian's error bodies.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.dashscope.bodies import json_response
from gateway.dashscope.errors import native_error
from gateway.sim import qwen_voice_enrollment as qwen
from gateway.sim import voice_enrollment as cosyvoice
from gateway.sim.admission import Call, admit
from gateway.sim.state import SimState

PATH = cosyvoice.PATH
_FLAVOURS = {
    cosyvoice.MODEL: (cosyvoice.cosyvoice_act, cosyvoice.redact),
    qwen.MODEL: (qwen.qwen_act, qwen.redact),
}


def _redact(body: dict[str, Any]) -> Any:
    flavour = _FLAVOURS.get(body.get("model"))  # type: ignore[arg-type]
    return flavour[1](body) if flavour else body


async def customization(request: Request) -> Response:
    state: SimState = request.app.state.sim
    call = await admit(
        request, state, "tts", lambda m: m in _FLAVOURS, native_error, stream=False, redact=_redact
    )
    if not isinstance(call, Call):
        return call
    act = _FLAVOURS[call.model][0]
    data = call.body.get("input")
    try:
        if not isinstance(data, dict):
            raise cosyvoice.Refused(400, "InvalidParameter", "input must be an object")
        output = await act(state, data)
    except cosyvoice.Refused as exc:
        call.record["status"] = exc.status
        return native_error(exc.status, exc.code, exc.message, call.request_id)
    return json_response({"output": output, "usage": {"count": 1}, "request_id": call.request_id})
