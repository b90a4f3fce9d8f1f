"""Tiny models for capture tests: Hugging Face encoders and decoders built from configs
(randomly initialised, nothing downloaded) and a ResNet written with torchvision's module
names (``conv1, bn1, relu, maxpool, layer1.0, ..., avgpool, fc``) without torchvision."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

VOCAB = 40
PAD = 0


def tiny_bert(layers: int = 2) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=48, max_position_embeddings=16,
                     pad_token_id=PAD)
    return BertModel(cfg).eval()


def tiny_gpt2(layers: int = 2) -> nn.Module:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=2, n_positions=16,
                     bos_token_id=1, eos_token_id=2, pad_token_id=PAD)
    return GPT2Model(cfg).eval()


def token_batch(n: int = 6, length: int = 7, left: bool = False, seed: int = 0
                ) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask`` of ``n`` sentences of 1..length tokens, padded
    on the right (or the left) with ``PAD``; every length differs from the next."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, length), PAD, dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.int64)
    for i in range(n):
        k = 1 + (i * 3) % length
        cols = slice(length - k, length) if left else slice(0, k)
        ids[i, cols] = rng.integers(3, VOCAB, size=k)
        mask[i, cols] = 1
    return {"input_ids": ids, "attention_mask": mask}


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 conv + batch-norm, identity or projected shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class TinyResNet(nn.Module):
    """A ResNet-18 layout (two blocks per stage, four stages) at width 4."""

    def __init__(self, width: int = 4, classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [width, width * 2, width * 4, width * 8]
        c_in = width
        for i, c in enumerate(chans, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(c_in, c, stride),
                                                     BasicBlock(c, c)))
            c_in = c
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return TinyResNet().eval()


RESNET_ALL = ["conv1", "bn1", "relu", "maxpool",
              *[f"layer{i}.{j}" for i in range(1, 5) for j in range(2)], "avgpool", "fc"]
