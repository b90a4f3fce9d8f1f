"""Model zoo: AlexNet-style CNN, ResNet-style CNN and MLP (the Transformer is in
``_transformer.py``), all width/depth-configurable, with stable human-readable layer names.

Every recorded layer is a direct attribute of the model whose forward output is the
representation to record (after its non-linearity), so that capture names come out as the
attribute names: ``conv1..conv5, pool3, fc6, fc7, out`` (AlexNet-style), ``stem, block1..,
pre_pool, post_pool, out`` (ResNet-style), ``fc1.., out`` (MLP). Models list those names in
``actstore_layers``, which ``layers="all"`` records.

Inputs: images as uint8 ``(B, 3, H, W)`` in 0..255 (or float in [0, 1]); bit vectors as uint8
``(B, L)``. Both are mapped to [-1, 1] inside the model, so probe sets store compact uint8.
Outputs: logits of every head concatenated, ``(B, sum of n_classes)`` in head order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from actstore._errors import ActstoreError
from actstore.training._checks import check_int
from actstore.training._data import Head, InputSpec

__all__ = ["ACTIVATIONS", "MLP", "AlexNetCNN", "HeadedModel", "ResNetCNN", "to_signed"]

#: Non-linearities of the MLP, by name.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) / bits (0, 1) or floats in [0, 1] -> float32 in [-1, 1]."""
    if x.dtype == torch.uint8:
        scale = 2.0 / 255.0 if x.ndim == 4 else 2.0
        return x.float() * scale - 1.0
    return x.float() * 2.0 - 1.0


class HeadedModel(nn.Module):
    """Base of the zoo: keeps the heads and the names of the recorded layers.

    Parameters
    ----------
    input_spec : InputSpec
        What one input sample is.
    heads : sequence of Head
        Outputs; the forward returns their logits concatenated in this order.
    kinds : tuple of str
        Input kinds this model accepts.
    """

    #: Registry name, set by subclasses.
    name = "model"
    #: Input kinds the model accepts.
    kinds: tuple[str, ...] = ("image", "bits")

    def __init__(self, input_spec: InputSpec, heads: Sequence[Head]):
        super().__init__()
        if input_spec.kind not in self.kinds:
            raise ActstoreError(
                f"model {self.name!r} takes {' or '.join(self.kinds)} inputs, but the dataset "
                f"gives {input_spec.kind}; choose another model or dataset"
            )
        if not heads:
            raise ActstoreError(f"model {self.name!r} needs at least one output head")
        self.input_spec = input_spec
        self.heads = tuple(heads)
        self.n_outputs = sum(h.n_classes for h in self.heads)
        self.actstore_layers: list[str] = []

    def split_logits(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, n_outputs)`` -> ``{head name: (B, n_classes)}``."""
        out, start = {}, 0
        for h in self.heads:
            out[h.name] = logits[:, start : start + h.n_classes]
            start += h.n_classes
        return out


# -- AlexNet-style CNN -------------------------------------------------------------------------


def _conv_relu(c_in: int, c_out: int, k: int, stride: int = 1,
               batch_norm: bool = False) -> nn.Sequential:
    if not batch_norm:
        return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2), nn.ReLU())
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class AlexNetCNN(HeadedModel):
    """Five conv layers, a max-pool and two fully connected layers, scaled down for small images.

    Layers: ``conv1..conv5`` (conv + ReLU; max-pools after conv1 and conv2 are not recorded),
    ``pool3`` (max-pool of conv5), ``fc6``, ``fc7`` (linear + ReLU), ``out`` (logits).

    Parameters
    ----------
    width : int
        Channels of conv1; conv2..conv5 have 3, 6, 4, 4 times as many (AlexNet's ratios).
    fc_width : int
        Units of fc6 and fc7 (narrowed from AlexNet's 4096).
    batch_norm : bool
        Batch normalisation between each conv and its ReLU (default off, as in AlexNet); it
        lets small networks train at a higher learning rate.
    """

    name = "alexnet"
    kinds = ("image",)

    def __init__(self, input_spec: InputSpec, heads: Sequence[Head], *, width: int = 16,
                 fc_width: int = 128, batch_norm: bool = False):
        super().__init__(input_spec, heads)
        w = check_int("alexnet", "width", width, 1, 4096)
        if not isinstance(batch_norm, bool):
            raise ActstoreError(f"alexnet parameter batch_norm={batch_norm!r} must be true or "
                                "false")
        bn = batch_norm
        fc = check_int("alexnet", "fc_width", fc_width, 1, 65536)
        size = input_spec.shape[-1]
        # stride 1 for CPU-sized images, AlexNet's large strided kernel at full size
        stride, k1 = (1, 5) if size < 96 else ((2, 7) if size < 192 else (4, 11))
        c = (w, 3 * w, 6 * w, 4 * w, 4 * w)
        self.conv1 = _conv_relu(3, c[0], k1, stride, bn)
        self.conv2 = _conv_relu(c[0], c[1], 3, batch_norm=bn)
        self.conv3 = _conv_relu(c[1], c[2], 3, batch_norm=bn)
        self.conv4 = _conv_relu(c[2], c[3], 3, batch_norm=bn)
        self.conv5 = _conv_relu(c[3], c[4], 3, batch_norm=bn)
        self.pool3 = nn.MaxPool2d(2)
        self.fc6 = nn.Sequential(nn.Linear(c[4] * 16, fc), nn.ReLU())
        self.fc7 = nn.Sequential(nn.Linear(fc, fc), nn.ReLU())
        self.out = nn.Linear(fc, self.n_outputs)
        self.actstore_layers = ["conv1", "conv2", "conv3", "conv4", "conv5", "pool3", "fc6",
                                "fc7", "out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_signed(x)  # (B, 3, H, W)
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = self.conv5(self.conv4(self.conv3(x)))
        x = self.pool3(x)
        x = F.adaptive_avg_pool2d(x, 4).flatten(1)  # (B, C5 * 16) whatever the image size
        return self.out(self.fc7(self.fc6(x)))  # (B, n_outputs)


# -- ResNet-style CNN --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 conv + batch-norm layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv_a = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(c_out)
        self.conv_b = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn_a(self.conv_a(x)))
        y = self.bn_b(self.conv_b(y))
        return F.relu(y + self.shortcut(x))


class ResNetCNN(HeadedModel):
    """A stem, stages of residual blocks (channels doubling, stride 2 between stages), global
    average pooling and a linear readout.

    Layers: ``stem``, ``block1..blockN`` (N = stages x blocks_per_stage), ``pre_pool`` (the last
    block's feature map), ``post_pool`` (its global average), ``out``.

    Parameters
    ----------
    width : int
        Channels of the stem and the first stage.
    stages : int
        Number of stages.
    blocks_per_stage : int
        Residual blocks per stage (the depth).
    """

    name = "resnet"
    kinds = ("image",)

    def __init__(self, input_spec: InputSpec, heads: Sequence[Head], *, width: int = 16,
                 stages: int = 3, blocks_per_stage: int = 1):
        super().__init__(input_spec, heads)
        w = check_int("resnet", "width", width, 1, 4096)
        n_stages = check_int("resnet", "stages", stages, 1, 8)
        per = check_int("resnet", "blocks_per_stage", blocks_per_stage, 1, 64)
        size = input_spec.shape[-1]
        stride = 1 if size < 96 else (2 if size < 192 else 4)
        self.stem = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()
        )
        self.n_blocks = n_stages * per
        c_in, k = w, 0
        for s in range(n_stages):
            c_out = w * 2**s
            for b in range(per):
                k += 1
                setattr(self, f"block{k}",
                        BasicBlock(c_in, c_out, stride=2 if (s > 0 and b == 0) else 1))
                c_in = c_out
        self.pre_pool = nn.Identity()
        self.post_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out = nn.Linear(c_in, self.n_outputs)
        self.actstore_layers = ["stem", *[f"block{i + 1}" for i in range(self.n_blocks)],
                                "pre_pool", "post_pool", "out"]
        # pre_pool is recorded whole (its global average is post_pool)
        self.actstore_reductions = {"pre_pool": "flatten"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(to_signed(x))  # (B, width, H', W')
        for i in range(self.n_blocks):
            x = getattr(self, f"block{i + 1}")(x)
        x = self.post_pool(self.pre_pool(x))  # (B, C)
        return self.out(x)  # (B, n_outputs)


# -- MLP -------------------------------------------------------------------------------------


class MLP(HeadedModel):
    """Fully connected layers ``fc1..fcN`` (linear + non-linearity) and a linear ``out``.

    Parameters
    ----------
    hidden : sequence of int
        Units per hidden layer (default 256-128-64-64, the binary task's MLP).
    activation : str
        One of :data:`ACTIVATIONS` (default leaky ReLU).
    """

    name = "mlp"

    def __init__(self, input_spec: InputSpec, heads: Sequence[Head], *,
                 hidden: Sequence[int] = (256, 128, 64, 64), activation: str = "leaky_relu"):
        super().__init__(input_spec, heads)
        if isinstance(hidden, (int, str)) or not list(hidden):
            raise ActstoreError(f"mlp parameter hidden must be a list of layer widths, got "
                                f"{hidden!r}")
        sizes = [check_int("mlp", "hidden", h, 1, 1 << 20) for h in hidden]
        if activation not in ACTIVATIONS:
            raise ActstoreError(f"unknown mlp activation {activation!r}; valid: "
                                f"{', '.join(ACTIVATIONS)}")
        d_in = 1
        for s in input_spec.shape:
            d_in *= s
        for i, d_out in enumerate(sizes):
            setattr(self, f"fc{i + 1}", nn.Sequential(nn.Linear(d_in, d_out),
                                                      ACTIVATIONS[activation]()))
            d_in = d_out
        self.n_hidden = len(sizes)
        self.out = nn.Linear(d_in, self.n_outputs)
        self.actstore_layers = [*[f"fc{i + 1}" for i in range(self.n_hidden)], "out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_signed(x).flatten(1)  # (B, D)
        for i in range(self.n_hidden):
            x = getattr(self, f"fc{i + 1}")(x)
        return self.out(x)  # (B, n_outputs)

