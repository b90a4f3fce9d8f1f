"""A small 1-D convolutional network over bit vectors (the CNN of the multi-feature tasks).

The bits are one input channel along one axis; each conv layer (stride 1, zero padding that
keeps the length) is followed by a ReLU, then the feature map is flattened into a fully
connected layer and the linear readout. Layers: ``conv1..convN`` (recorded whole, channels x
positions, since a channel mean would average away which input domain a unit reads), ``fc``,
``out``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from actstore._errors import ActstoreError
from actstore.training._checks import check_int
from actstore.training._data import Head, InputSpec
from actstore.training._models import HeadedModel, to_signed

__all__ = ["Conv1dNet"]


class Conv1dNet(HeadedModel):
    """Conv layers over the input bits, one fully connected layer and a linear readout.

    Parameters
    ----------
    channels : sequence of int
        Channels of each conv layer (its length is the number of conv layers).
    kernel_size : int
        Width of every kernel, in bits (odd, so that padding keeps the length).
    fc_width : int
        Units of the fully connected layer.
    """

    name = "conv1d"
    kinds = ("bits",)

    def __init__(self, input_spec: InputSpec, heads: Sequence[Head], *,
                 channels: Sequence[int] = (16, 16), kernel_size: int = 3, fc_width: int = 64):
        super().__init__(input_spec, heads)
        if isinstance(channels, (int, str)) or not list(channels):
            raise ActstoreError(f"conv1d parameter channels must be a list of channel counts, "
                                f"got {channels!r}")
        sizes = [check_int("conv1d", "channels", c, 1, 4096) for c in channels]
        k = check_int("conv1d", "kernel_size", kernel_size, 1, 1024)
        if k % 2 == 0:
            raise ActstoreError(f"conv1d kernel_size={k} must be odd (the padding keeps the "
                                "length of the bit vector)")
        fc = check_int("conv1d", "fc_width", fc_width, 1, 1 << 20)
        length = input_spec.shape[0]
        c_in = 1
        for i, c_out in enumerate(sizes):
            setattr(self, f"conv{i + 1}", nn.Sequential(nn.Conv1d(c_in, c_out, k, padding=k // 2),
                                                        nn.ReLU()))
            c_in = c_out
        self.n_conv = len(sizes)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c_in * length, fc), nn.ReLU())
        self.out = nn.Linear(fc, self.n_outputs)
        convs = [f"conv{i + 1}" for i in range(self.n_conv)]
        self.actstore_layers = [*convs, "fc", "out"]
        self.actstore_reductions = {name: "flatten" for name in convs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = to_signed(x).flatten(1).unsqueeze(1)  # (B, 1, L)
        for i in range(self.n_conv):
            h = getattr(self, f"conv{i + 1}")(h)  # (B, C, L)
        return self.out(self.fc(h))  # (B, n_outputs)
