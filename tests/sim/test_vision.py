"""Qwen-VL image input on the multimodal-generation endpoint: SDK, wire shapes, limits, usage."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
import requests
from dashscope import MultiModalConversation
from PIL import Image

from tests.conftest import SimHandle
from tests.sim.native_wire import MM_PATH, choice, events, post, stream_chunks


def data_url(size: tuple[int, int], colour: Any, fmt: str = "PNG", mime: str | None = None) -> str:
    mode = "RGBA" if isinstance(colour, tuple) and len(colour) == 4 else "RGB"
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, fmt)
    return f"data:{mime or 'image/' + fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def ask(*images: str, text: str = "What is in the picture?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [*({"image": i} for i in images), {"text": text}]}]


def _ok(r: Any) -> Any:
    assert r.status_code == 200, r
    return r


def test_describes_size_and_colour_with_image_tokens(ds: SimHandle) -> None:
    r = _ok(
        MultiModalConversation.call(model="qwen-vl-max", messages=ask(data_url((640, 480), (200, 10, 10))))
    )
    c = r.output.choices[0]
    assert c.finish_reason == "stop"
    assert c.message.content == [{"text": "The image is 640x480 pixels and mostly red."}]
    # 640x480 at 32 px per token side: 20 * 15 patches + 2 marker tokens
    assert r.usage["image_tokens"] == 302
    assert r.usage["input_tokens_details"] == {"text_tokens": 5, "image_tokens": 302}
    assert r.usage.input_tokens == 307 and r.usage.output_tokens == 8
    [item] = ds.requests("generation")
    assert item["path"].endswith("multimodal-generation/generation")
    assert "base64 chars elided" in item["body"]["input"]["messages"][0]["content"][0]["image"]


def test_several_images_jpeg_and_webp(ds: SimHandle) -> None:
    images = [data_url((64, 32), (20, 170, 40), "JPEG"), data_url((100, 100), (10, 40, 230), "WEBP")]
    r = _ok(MultiModalConversation.call(model="qwen3-vl-plus", messages=ask(*images)))
    text = r.output.choices[0].message.content[0]["text"]
    assert text == "Image 1 is 64x32 pixels and mostly green. Image 2 is 100x100 pixels and mostly blue."
    # 64x32 is 2x1 patches, below the 4-patch minimum: scaled by sqrt(2) and rounded up to 3x2;
    # 100x100 rounds to 96x96 = 3x3 patches; each image adds 2 marker tokens
    assert r.usage["image_tokens"] == (6 + 2) + (9 + 2)


def test_transparent_pixels_are_ignored(ds: SimHandle) -> None:
    buf = io.BytesIO()
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    img.paste((250, 220, 0, 255), (0, 0, 10, 40))  # a quarter of it opaque yellow
    img.save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = _ok(MultiModalConversation.call(model="qwen-vl-plus", messages=ask(url)))
    assert r.output.choices[0].message.content[0]["text"].endswith("mostly yellow.")


def test_max_pixels_and_high_resolution_change_tokens(ds: SimHandle) -> None:
    big = data_url((3000, 2000), (255, 255, 255), "JPEG")

    def tokens(model: str, item_extra: dict[str, Any], **params: Any) -> int:
        msgs = [{"role": "user", "content": [{"image": big, **item_extra}, {"text": "?"}]}]
        return _ok(MultiModalConversation.call(model=model, messages=msgs, **params)).usage["image_tokens"]

    default_vl = tokens("qwen-vl-max", {})  # capped at 1,310,720 pixels
    assert default_vl <= 1_310_720 // 1024 + 2 and default_vl > 1_000
    assert tokens("qwen3-vl-plus", {}) > default_vl  # Qwen3-VL default cap is 2,621,440
    assert tokens("qwen-vl-max", {"max_pixels": 200_000}) <= 200_000 // 1024 + 2
    # high resolution: no pixel cap below 16,384 tokens, so 2000x3000 rounds to 62x94 patches
    assert tokens("qwen-vl-max", {}, vl_high_resolution_images=True) == 62 * 94 + 2
    assert tokens("qwen2.5-vl-72b-instruct", {}) <= 1_003_520 // 784 + 2  # 28-pixel patches


def test_streams_incremental_and_sdk_merged(ds: SimHandle) -> None:
    msgs = ask(data_url((50, 50), (0, 0, 0)))
    parts = [
        _ok(p)
        for p in MultiModalConversation.call(
            model="qwen3-vl-plus", messages=msgs, stream=True, incremental_output=True
        )
    ]
    text = "".join(
        p.output.choices[0].message.content[0]["text"] for p in parts if p.output.choices[0].message.content
    )
    assert text == "The image is 50x50 pixels and mostly black."
    assert [p.output.choices[0].finish_reason for p in parts][-1] == "stop"
    assert all(p.usage["image_tokens"] == 6 for p in parts)
    merged = list(
        MultiModalConversation.call(
            model="qwen3-vl-plus", messages=msgs, stream=True, incremental_output=False
        )
    )
    assert merged[-1].output.choices[0].message.content[0]["text"] == text


def test_raw_stream_shapes(ds: SimHandle) -> None:
    body = {"model": "qwen-vl-plus", "input": {"messages": ask(data_url((20, 20), (255, 255, 255)))}}
    inc = stream_chunks(ds, MM_PATH, {**body, "parameters": {"incremental_output": True}})
    assert all(choice(c)["message"]["role"] == "assistant" for c in inc)
    assert [choice(c)["finish_reason"] for c in inc] == ["null"] * (len(inc) - 1) + ["stop"]
    assert "".join(choice(c)["message"]["content"][0]["text"] for c in inc) == (
        "The image is 20x20 pixels and mostly white."
    )
    full = stream_chunks(ds, MM_PATH, {**body, "parameters": {"incremental_output": False}})
    texts = [choice(c)["message"]["content"][0]["text"] for c in full]
    assert texts[-1] == "The image is 20x20 pixels and mostly white." and texts[1].startswith(texts[0])
    assert [c["usage"]["output_tokens"] for c in full][-1] == len(inc) - 1


def test_follow_up_without_image_still_bills_it_and_answers_in_text(ds: SimHandle) -> None:
    msgs = [
        *ask(data_url((50, 50), (0, 0, 0))),
        {"role": "assistant", "content": [{"text": "A black square."}]},
        {"role": "user", "content": [{"text": "Thanks"}]},
    ]
    r = _ok(MultiModalConversation.call(model="qwen-vl-max", messages=msgs))
    assert r.output.choices[0].message.content == [{"text": "Simulated answer: Thanks"}]
    assert r.usage["image_tokens"] == 6


@pytest.mark.parametrize(
    ("image", "status", "code", "needle"),
    [
        ("https://example.com/cat.png", 400, "InvalidParameter", "does not download images"),
        ("oss://bucket/cat.png", 400, "InvalidParameter", "data URL"),
        (data_url((8, 40), (0, 0, 0)), 400, "InvalidParameter", "greater than 10 pixels"),
        (data_url((2300, 11), (0, 0, 0)), 400, "InvalidParameter", "200:1"),
        (data_url((40, 40), (0, 0, 0), "PNG", "image/jpeg"), 400, "InvalidParameter", "declares image/jpeg"),
        (data_url((40, 40), (0, 0, 0), "GIF"), 415, "BadRequest.UnsupportedFileFormat", "GIF"),
        ("data:image/png;base64,@@@", 400, "InvalidParameter", "base64"),
        (
            "data:image/png;base64," + base64.b64encode(b"not an image").decode(),
            415,
            "BadRequest.UnsupportedFileFormat",
            "decoded",
        ),
    ],
)
def test_refused_images(ds: SimHandle, image: str, status: int, code: str, needle: str) -> None:
    r = MultiModalConversation.call(model="qwen-vl-max", messages=ask(image))
    assert (r.status_code, r.code) == (status, code), r
    assert needle in r.message


def test_video_items_and_non_vision_models_are_refused(ds: SimHandle) -> None:
    msgs = [{"role": "user", "content": [{"video": "data:video/mp4;base64,AAAA"}, {"text": "?"}]}]
    r = MultiModalConversation.call(model="qwen-vl-max", messages=msgs)
    assert (r.status_code, r.code) == (400, "InvalidParameter") and "video" in r.message
    r = MultiModalConversation.call(model="qwen-plus", messages=ask(data_url((20, 20), (0, 0, 0))))
    assert (r.status_code, r.code) == (404, "ModelNotFound")


def test_tools_on_qwen3_vl_use_list_content(ds: SimHandle) -> None:
    tool = {"type": "function", "function": {"name": "describe_image", "parameters": {"type": "object"}}}
    body = {
        "model": "qwen3-vl-plus",
        "input": {"messages": ask(data_url((20, 20), (0, 0, 0)), text="describe image please")},
        "parameters": {"tools": [tool]},
    }
    whole = post(ds, MM_PATH, body).json()
    msg = choice(whole)["message"]
    assert msg["content"] == [] and msg["tool_calls"][0]["function"] == {
        "name": "describe_image",
        "arguments": "{}",
    }
    assert choice(whole)["finish_reason"] == "tool_calls" and whole["usage"]["image_tokens"] == 6
    chunks = stream_chunks(ds, MM_PATH, {**body, "parameters": {"tools": [tool], "incremental_output": True}})
    assert all(choice(c)["message"]["content"] == [] for c in chunks)
    assert choice(chunks[-1])["finish_reason"] == "tool_calls"
    # tool results come back as list content on this endpoint
    msgs = [
        *body["input"]["messages"],
        {"role": "assistant", "content": [], "tool_calls": msg["tool_calls"]},
        {"role": "tool", "content": [{"text": "a black square"}], "tool_call_id": msg["tool_calls"][0]["id"]},
    ]
    final = post(ds, MM_PATH, {**body, "input": {"messages": msgs}}).json()
    assert choice(final)["message"]["content"] == [
        {"text": "Simulated answer using describe_image: a black square"}
    ]
    refused = post(ds, MM_PATH, {**body, "model": "qwen-vl-max"})
    assert refused.status_code == 400 and "does not support tools" in refused.json()["message"]


def test_json_mode_on_vl_wraps_the_description(ds: SimHandle) -> None:
    msgs = ask(data_url((30, 30), (255, 140, 0)), text="Describe it as JSON")
    r = _ok(
        MultiModalConversation.call(
            model="qwen-vl-max", messages=msgs, response_format={"type": "json_object"}
        )
    )
    text = r.output.choices[0].message.content[0]["text"]
    assert json.loads(text) == {"answer": "The image is 30x30 pixels and mostly orange."}


def test_faults_apply_to_vl_calls(ds: SimHandle) -> None:
    ds.fault(service="generation", cut_after=2, times=1)
    got = []
    with pytest.raises(requests.exceptions.RequestException):
        for part in MultiModalConversation.call(
            model="qwen-vl-max",
            messages=ask(data_url((20, 20), (0, 0, 0))),
            stream=True,
            incremental_output=True,
        ):
            got.append(part.output.choices[0].message.content[0]["text"])
    assert got == ["The", " image"]
    ds.fault(service="generation", status=429, times=1)
    r = MultiModalConversation.call(model="qwen-vl-max", messages=ask(data_url((20, 20), (0, 0, 0))))
    assert (r.status_code, r.code) == (429, "Throttling.RateQuota")
    ds.fault(service="generation", status=500, cut_after=1, times=1)
    body = {"model": "qwen-vl-max", "input": {"messages": ask(data_url((20, 20), (0, 0, 0)))}}
    raw = post(ds, MM_PATH, {**body, "parameters": {"incremental_output": True}}, stream=True)
    assert [name for name, _ in events(raw.text)] == ["result", "error"]
