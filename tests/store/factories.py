"""Small models for store tests (also loaded by file path from `actstore dump` subprocesses)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv maps (4-D outputs) followed by dense layers."""

    actstore_layers = ["conv1", "relu1", "conv2", "pool", "fc1", "out"]

    def __init__(self, width: int = 8, n_out: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc1 = nn.Sequential(nn.Linear(2 * width, 32), nn.ReLU())
        self.out = nn.Linear(32, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.conv1(x))  # (B, C, H, W)
        h = torch.relu(self.conv2(h))
        return self.out(self.fc1(self.flat(self.pool(h))))


class MLP(nn.Module):
    actstore_layers = ["fc1", "fc2", "out"]

    def __init__(self, d_in: int = 32, width: int = 64, n_out: int = 2):
        super().__init__()
        self.fc1 = nn.Sequential(nn.Linear(d_in, width), nn.LeakyReLU())
        self.fc2 = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU())
        self.out = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc2(self.fc1(x)))


@dataclass
class Output:
    """A Hugging-Face-like output object."""

    last_hidden_state: torch.Tensor
    logits: torch.Tensor


class Block(nn.Module):
    """Returns a tuple, as transformer blocks in Hugging Face models do."""

    def __init__(self, d: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, w = self.attn(x, x, x)
        x = x + a
        return x + self.mlp(x), w


class TinyTransformer(nn.Module):
    actstore_layers = ["embed", "block0", "block1"]

    def __init__(self, vocab: int = 16, d: int = 16, n_out: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.block0 = Block(d)
        self.block1 = Block(d)
        self.head = nn.Linear(d, n_out)

    def forward(self, tokens: torch.Tensor) -> Output:
        h = self.embed(tokens)  # (B, T, D)
        h, _ = self.block0(h)
        h, _ = self.block1(h)
        return Output(last_hidden_state=h, logits=self.head(h[:, -1]))


def small_cnn(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return SmallCNN(width)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP()


def tiny_transformer() -> nn.Module:
    torch.manual_seed(0)
    return TinyTransformer()


def image_checkpoints(folder: Path, n_samples: int, steps: tuple[int, ...],
                      shift: float = 0.0) -> Path:
    """A probe set of ``n_samples`` 8x8 images with a ``color`` label (``folder/probe.npz``)
    and one :func:`small_cnn` checkpoint per step (``folder/ck/step<step>.pt``), the output
    bias moved by ``shift`` before each one. Returns the checkpoint folder."""
    rng = np.random.default_rng(0)
    np.savez(folder / "probe.npz",
             inputs=rng.standard_normal((n_samples, 3, 8, 8)).astype("float32"),
             color=rng.integers(0, 3, n_samples))
    ck = folder / "ck"
    ck.mkdir()
    model = small_cnn()
    for step in steps:
        with torch.no_grad():
            model.out.bias.add_(shift)
        torch.save(model.state_dict(), ck / f"step{step}.pt")
    return ck
