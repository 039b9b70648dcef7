"""The Wav2Lip generator, written from the published layer tables.

Module and attribute names follow the official checkpoint's key layout exactly
(``face_encoder_blocks.<b>.<i>.conv_block.<0|1>.*``, ``audio_encoder.<i>...``,
``face_decoder_blocks...``, ``output_block...``) so an official ``state_dict`` loads
with strict key matching. Importing this module imports torch; the gateway only does
so when a checkpoint is configured.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lipsync.checkpoint import check_keys, read_state_dict

#: (cin, cout, kernel, stride, padding, residual) per ConvBlock.
_Spec = tuple[int, int, int, int | tuple[int, int], int, bool]

FACE_ENCODER: list[list[_Spec]] = [
    [(6, 16, 7, 1, 3, False)],
    [(16, 32, 3, 2, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True)],
    [(32, 64, 3, 2, 1, False)] + [(64, 64, 3, 1, 1, True)] * 3,
    [(64, 128, 3, 2, 1, False)] + [(128, 128, 3, 1, 1, True)] * 2,
    [(128, 256, 3, 2, 1, False)] + [(256, 256, 3, 1, 1, True)] * 2,
    [(256, 512, 3, 2, 1, False), (512, 512, 3, 1, 1, True)],
    [(512, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)],
]

AUDIO_ENCODER: list[_Spec] = [
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
]

#: Decoder blocks 1..6: (UpBlock cin, cout, stride, padding, output_padding, residual repeats).
DECODER_UP: list[tuple[int, int, int, int, int, int]] = [
    (1024, 512, 1, 0, 0, 1),
    (1024, 512, 2, 1, 1, 2),
    (768, 384, 2, 1, 1, 2),
    (512, 256, 2, 1, 1, 2),
    (320, 128, 2, 1, 1, 2),
    (160, 64, 2, 1, 1, 2),
]


class ConvBlock(nn.Module):
    """Conv → BN (→ + input when residual) → ReLU. The residual joins after BN, before ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        if self.residual:
            y = y + x
        return self.act(y)


class UpBlock(nn.Module):
    """Transposed conv → BN → ReLU (never residual)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _blocks(specs: list[_Spec]) -> nn.Sequential:
    return nn.Sequential(*(ConvBlock(*s) for s in specs))


class Wav2Lip(nn.Module):
    """Generator: (N,1,80,16) mel + (N,6,96,96) BGR faces in [0,1] → (N,3,96,96) BGR in [0,1]."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(_blocks(b) for b in FACE_ENCODER)
        self.audio_encoder = _blocks(AUDIO_ENCODER)
        decoder = [nn.Sequential(ConvBlock(512, 512, 1, 1, 0))]
        for cin, cout, stride, pad, out_pad, repeats in DECODER_UP:
            layers: list[nn.Module] = [UpBlock(cin, cout, 3, stride, pad, out_pad)]
            layers += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(repeats)]
            decoder.append(nn.Sequential(*layers))
        self.face_decoder_blocks = nn.ModuleList(decoder)
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def encode_face(self, faces: torch.Tensor) -> list[torch.Tensor]:
        """Skip features of every encoder block. For a still avatar they are computed once."""
        feats = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        return feats

    def decode(self, mels: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """Decode from the audio embedding, concatenating [decoder output, encoder skip] per block."""
        x = self.audio_encoder(mels)
        n = x.shape[0]
        for depth, block in enumerate(self.face_decoder_blocks):
            skip = feats[len(feats) - 1 - depth]
            if skip.shape[0] != n:  # one cached face for the whole batch
                skip = skip.expand(n, -1, -1, -1)
            x = torch.cat([block(x), skip], dim=1)
        return self.output_block(x)

    def forward(self, mels: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        if mels.dim() == 5:  # training layout: audio (B,T,1,80,16), faces (B,6,T,96,96)
            b, t = mels.shape[:2]
            mels = torch.cat([mels[:, i] for i in range(t)], dim=0)
            faces = torch.cat([faces[:, :, i] for i in range(t)], dim=0)
            out = self.decode(mels, self.encode_face(faces))
            return torch.stack(torch.split(out, b, dim=0), dim=2)
        return self.decode(mels, self.encode_face(faces))


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the generator with its shape (352 keys)."""
    return {k: tuple(v.shape) for k, v in Wav2Lip().state_dict().items()}


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", *, trusted: bool = False
) -> Wav2Lip:
    """Builds the generator from an official checkpoint (or a bare state dict) in eval mode.

    Keys must match exactly (strict); a leading ``module.`` is stripped. Raises
    CheckpointError with the missing / unexpected keys named on a wrong or corrupt file.
    """
    model = Wav2Lip()
    state = read_state_dict(path, trusted=trusted)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_keys(state, expected, source=f"Wav2Lip checkpoint {path}")
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)
