"""What a chat target can do with tools, JSON output and images, for ``/v1/models``.

Bailian text models take tools and JSON mode natively (the gateway checks a schema answer
itself where the model does not enforce one: ``answers.py``); Qwen-VL models take images; the
local llama.cpp models take tools and schemas through a grammar, and no images.
"""

from __future__ import annotations

from policies.targets import Target


def chat_features(target: Target) -> dict[str, bool]:
    vision = target.provider == "bailian" and "vl" in target.model.lower()
    return {"tools": True, "json_schema": True, "vision": vision}
