"""A small pre-norm Transformer encoder whose heads are read from dedicated output tokens.

The input becomes a token sequence (one token per input bit, or one per image patch),
followed by one learned *query* token per output position. Head ``h`` reads its logits from
query token ``h.position``, so the output position of a feature is a parameter of the task
(Lampinen, Chan & Hermann 2024). Layers: ``embed``, ``block0..``, ``out``; their outputs are
token sequences ``(B, T, D)`` (capture reduces them: ``mean``, ``last`` or ``all``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from actstore._errors import ActstoreError
from actstore.training._checks import check_int
from actstore.training._data import Head, InputSpec
from actstore.training._models import HeadedModel, to_signed

__all__ = ["SmallTransformer"]


class Embed(nn.Module):
    """Tokens (bit values or image patches) + learned positions, then the query tokens."""

    def __init__(self, input_spec: InputSpec, d_model: int, n_queries: int, patch_size: int):
        super().__init__()
        self.kind = input_spec.kind
        if self.kind == "bits":
            self.n_in = input_spec.shape[0]
            self.token = nn.Embedding(2, d_model)
        else:
            _, h, w = input_spec.shape
            if h % patch_size or w % patch_size:
                raise ActstoreError(
                    f"transformer patch_size={patch_size} does not divide the {h}x{w} images; "
                    "choose a divisor of the image size"
                )
            self.n_in = (h // patch_size) * (w // patch_size)
            self.patch = nn.Conv2d(3, d_model, patch_size, stride=patch_size)
        self.query = nn.Parameter(torch.randn(n_queries, d_model) * 0.02)
        self.position = nn.Parameter(torch.randn(self.n_in + n_queries, d_model) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "bits":
            tok = self.token(x.long())  # (B, L, D)
        else:
            tok = self.patch(to_signed(x)).flatten(2).transpose(1, 2)  # (B, P, D)
        q = self.query.unsqueeze(0).expand(tok.shape[0], -1, -1)  # (B, Q, D)
        return torch.cat([tok, q], dim=1) + self.position  # (B, T, D)


class Block(nn.Module):
    """Pre-norm self-attention and MLP, each with a residual connection."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln_attn = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln_attn(x)).split(d, dim=2)
        # (B, T, D) -> (B, heads, T, D / heads)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        att = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.n_heads), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)  # (B, T, D)
        x = x + self.proj(y)
        return x + self.mlp(self.ln_mlp(x))


class SmallTransformer(HeadedModel):
    """A few Transformer blocks reading bits (one token each) or image patches.

    Parameters
    ----------
    d_model : int
        Width of the token representations.
    n_layers : int
        Number of blocks (the depth).
    n_heads : int
        Attention heads; must divide ``d_model``.
    mlp_ratio : int
        Hidden width of each block's MLP, as a multiple of ``d_model``.
    patch_size : int
        Side of the square image patches (image inputs only).
    """

    name = "transformer"

    def __init__(self, input_spec: InputSpec, heads: Sequence[Head], *, d_model: int = 64,
                 n_layers: int = 2, n_heads: int = 4, mlp_ratio: int = 4, patch_size: int = 4):
        super().__init__(input_spec, heads)
        d = check_int("transformer", "d_model", d_model, 1, 1 << 16)
        n_layers = check_int("transformer", "n_layers", n_layers, 1, 256)
        n_heads = check_int("transformer", "n_heads", n_heads, 1, d)
        if d % n_heads:
            raise ActstoreError(f"transformer n_heads={n_heads} must divide d_model={d}")
        mlp_ratio = check_int("transformer", "mlp_ratio", mlp_ratio, 1, 64)
        patch_size = check_int("transformer", "patch_size", patch_size, 1, 1024)
        n_queries = max(h.position for h in self.heads) + 1
        self.embed = Embed(input_spec, d, n_queries, patch_size)
        self.n_layers = n_layers
        for i in range(n_layers):
            setattr(self, f"block{i}", Block(d, n_heads, mlp_ratio))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, self.n_outputs))
        self.actstore_layers = ["embed", *[f"block{i}" for i in range(n_layers)], "out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # (B, T, D)
        for i in range(self.n_layers):
            h = getattr(self, f"block{i}")(h)
        o = self.out(h)  # (B, T, n_outputs): every token's logits for every head
        n_in, parts, start = self.embed.n_in, [], 0
        for head in self.heads:
            parts.append(o[:, n_in + head.position, start : start + head.n_classes])
            start += head.n_classes
        return torch.cat(parts, dim=1)  # (B, n_outputs)
