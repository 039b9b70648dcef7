"""The generator's key table, checkpoint loading (official format, module. prefix, legacy
serialisation) and the clear errors for wrong or corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lipsync.checkpoint import extract_state_dict  # noqa: E402
from lipsync.errors import CheckpointError  # noqa: E402
from lipsync.wav2lip import Wav2Lip, load_checkpoint  # noqa: E402

KEYS_FILE = Path(__file__).with_name("wav2lip_keys.txt")


def reference_table() -> dict[str, tuple[int, ...]]:
    table = {}
    for line in KEYS_FILE.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, shape = line.split()
        table[name] = () if shape == "scalar" else tuple(int(x) for x in shape.split("x"))
    return table


@pytest.fixture(scope="module")
def model() -> Wav2Lip:
    torch.manual_seed(0)
    m = Wav2Lip().eval()
    # Non-trivial BN statistics so a load that silently skips buffers would show.
    with torch.no_grad():
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return m


def test_key_set_and_shapes_match_the_reference_table(model: Wav2Lip) -> None:
    table = reference_table()
    assert len(table) == 352
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(mine) == set(table), (sorted(set(mine) - set(table))[:5], sorted(set(table) - set(mine))[:5])
    assert mine == table
    assert sum(p.numel() for p in model.parameters()) == 36_298_035


def test_forward_shapes_inference_and_training_layouts(model: Wav2Lip) -> None:
    with torch.inference_mode():
        out = model(torch.rand(3, 1, 80, 16), torch.rand(3, 6, 96, 96))
        assert out.shape == (3, 3, 96, 96)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0  # sigmoid output
        out5 = model(torch.rand(2, 5, 1, 80, 16), torch.rand(2, 6, 5, 96, 96))
        assert out5.shape == (2, 3, 5, 96, 96)


def test_residual_joins_after_batchnorm_before_relu() -> None:
    from lipsync.wav2lip import ConvBlock

    block = ConvBlock(4, 4, 3, 1, 1, residual=True).eval()
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = torch.relu(block.conv_block(x) + x)
        assert torch.allclose(block(x), expected)
        assert not torch.allclose(block(x), torch.relu(block.conv_block(x)) + x)


def _official(model: Wav2Lip, prefix: str) -> dict:
    state = {f"{prefix}{k}": v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters()][:2], lr=1e-4).state_dict()
    return {"state_dict": state, "optimizer": optimizer, "global_step": 123, "global_epoch": 4}


@pytest.mark.parametrize(
    ("prefix", "zipfile"), [("module.", True), ("", False)], ids=["zip-module-prefix", "legacy-plain"]
)
def test_official_format_checkpoint_loads_strictly_and_renders(
    model: Wav2Lip, tmp_path: Path, prefix: str, zipfile: bool
) -> None:
    path = tmp_path / "wav2lip.pth"
    torch.save(_official(model, prefix), path, _use_new_zipfile_serialization=zipfile)
    loaded = load_checkpoint(path, "cpu")
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    mel = torch.rand(2, 1, 80, 16)
    faces = torch.rand(2, 6, 96, 96)
    with torch.inference_mode():
        assert torch.allclose(loaded(mel, faces), model(mel, faces))


def test_bare_state_dict_is_accepted(model: Wav2Lip, tmp_path: Path) -> None:
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    assert isinstance(load_checkpoint(path), Wav2Lip)


def test_only_a_leading_module_prefix_is_stripped() -> None:
    t = torch.zeros(1)
    state = extract_state_dict({"state_dict": {"module.a.module.b": t, "c": t}})
    assert set(state) == {"a.module.b", "c"}


def test_truncated_download_is_reported(model: Wav2Lip, tmp_path: Path) -> None:
    for zipfile in (True, False):
        src = tmp_path / f"src{zipfile}.pth"
        torch.save(_official(model, ""), src, _use_new_zipfile_serialization=zipfile)
        cut = tmp_path / f"cut{zipfile}.pth"
        cut.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
        with pytest.raises(CheckpointError, match=r"truncated|corrupt"):
            load_checkpoint(cut)


def test_html_page_saved_as_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "wav2lip.pth"
    path.write_text("<!DOCTYPE html><html><head><title>Sign in</title></head><body>quota</body></html>")
    with pytest.raises(CheckpointError, match="HTML"):
        load_checkpoint(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")


def test_s3fd_passed_by_mistake_names_the_keys(tmp_path: Path) -> None:
    # The S3FD detector's own layer names (a VGG16 backbone).
    s3fd = {
        "conv1_1.weight": torch.zeros(64, 3, 3, 3),
        "conv1_1.bias": torch.zeros(64),
        "conv3_3_norm.weight": torch.zeros(256),
        "fc7.weight": torch.zeros(1024, 1024, 1, 1),
    }
    path = tmp_path / "s3fd.pth"
    torch.save(s3fd, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert "S3FD" in text
    assert "352 missing" in text
    assert "conv1_1.weight" in text  # unexpected keys are named


def test_wrong_shapes_and_partial_dicts_are_named(model: Wav2Lip, tmp_path: Path) -> None:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["output_block.1.weight"] = torch.zeros(3, 16, 1, 1)
    del state["audio_encoder.12.conv_block.0.bias"]
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert "1 missing" in text and "audio_encoder.12.conv_block.0.bias" in text
    assert "output_block.1.weight" in text and "wrong shape" in text


def test_dict_without_state_dict_key(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"model": {"x": 1}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        load_checkpoint(path)


def test_engine_uses_cached_face_features_consistently(model: Wav2Lip) -> None:
    from lipsync.blend import face_input
    from lipsync.engine import Wav2LipEngine

    engine = Wav2LipEngine(model, torch.device("cpu"), batch_size=3)
    crop = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    face6 = face_input(crop)
    assert face6.shape == (6, 96, 96)
    assert not face6[:3, 48:].any() and face6[3:, 48:].any()  # lower half masked in the first copy
    mels = np.random.default_rng(2).standard_normal((7, 80, 16)).astype(np.float32)
    out = engine.predict(face6, mels, cache_key="x")  # 3 batches: 3 + 3 + 1
    assert out.shape == (7, 96, 96, 3) and out.dtype == np.uint8
    with torch.inference_mode():
        full = model(
            torch.from_numpy(mels)[:, None], torch.from_numpy(face6)[None].expand(7, -1, -1, -1).contiguous()
        )
    expected = (full.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(out.astype(int) - expected).max() <= 1
    report = engine.memory_report()
    assert report["device"] == "cpu" and report["weights_bytes"]["face_decoder_blocks"] > 0


def test_out_of_memory_halves_the_batch_and_retries(model: Wav2Lip, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipsync import engine as engine_mod

    engine = engine_mod.Wav2LipEngine(model, torch.device("cpu"), batch_size=8)
    real_run = engine._run
    sizes: list[int] = []

    def run(feats: list, mels: np.ndarray) -> np.ndarray:
        sizes.append(len(mels))
        if len(mels) > 2:
            raise engine_mod._OOM("CUDA out of memory (simulated)")
        return real_run(feats, mels)

    monkeypatch.setattr(engine, "_run", run)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: sizes.append(-1))
    face6 = np.zeros((6, 96, 96), np.float32)
    out = engine.predict(face6, np.zeros((5, 80, 16), np.float32))
    assert out.shape == (5, 96, 96, 3)
    assert sizes[:5] == [5, -1, 2, 2, 1]  # 8→5 (clipped to n) fails, halves to 2, keeps it
    assert engine.batch_size == 2
