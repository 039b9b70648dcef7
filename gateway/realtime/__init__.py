"""``/v1/realtime``: the OpenAI Realtime (GA) protocol over a WebSocket.

The package is a protocol adapter: ``events`` knows the wire shapes (parsing client events,
building server events, the session configuration), ``session`` holds one connection's state
and runs its turns through the router (``input_audio``: its buffer, VAD and committed turns;
``live_transcript``: the speech transcribed while it is spoken; ``idle``: the VAD idle timeout;
``voice``: cloned voices), ``route`` is the FastAPI WebSocket endpoint. Nothing
here is a second pipeline: ASR, LLM and TTS calls go through ``services.router`` like every
other endpoint, so realtime gets the same chains, retries, breakers and fallback.
"""
