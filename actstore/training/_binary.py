"""The binary easy/hard feature task (Hermann & Lampinen 2020).

Inputs are ``2 * domain_bits`` bits (32 by default). The label ``y`` is balanced. The first
domain carries the *easy* feature (the parity of ``easy_bits`` bits: one bit by default, so
linearly extractable), the second domain the *hard* feature (parity of ``hard_bits`` bits:
XOR of two by default). For each domain the feature equals ``y`` with probability equal to its
predictivity (else ``1 - y``); the domain's bits are then uniform among the patterns with that
feature value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.training._checks import check_int, check_prob
from actstore.training._data import Dataset, InputSpec, Split, TaskData, params_hash, set_parity

__all__ = ["BinaryEasyHard"]

_PROBE = 5  # the stream of the probe set (training and validation: 1 and 2)


class BinaryEasyHard(Dataset):
    """Bit-vector inputs whose label is predicted by an easy and a hard feature.

    Parameters
    ----------
    domain_bits : int
        Bits per domain (16: bits 1-16 easy, 17-32 hard).
    easy_bits, hard_bits : int
        The easy / hard feature is the parity of this many bits of its domain.
    easy_predictivity, hard_predictivity : float
        Probability that the feature equals the label (0.5: uninformative, 1: exact).
    n_train, n_val : int
        Training and validation samples.
    n_probe : int
        Probe samples; in the probe set ``easy`` and ``hard`` are independent and balanced.
    probe_seed : int
        Seed of the probe stimuli.
    """

    name = "binary"

    def __init__(
        self,
        *,
        domain_bits: int = 16,
        easy_bits: int = 1,
        hard_bits: int = 2,
        easy_predictivity: float = 0.9,
        hard_predictivity: float = 0.9,
        n_train: int = 4096, n_val: int = 1024, n_probe: int = 1024,
        probe_seed: int = 0,
    ):
        self.features = {"label": 2, "easy": 2, "hard": 2}
        self.targets = ("label",)
        self.domain_bits = check_int("binary", "domain_bits", domain_bits, 1, 4096)
        self.easy_bits = check_int("binary", "easy_bits", easy_bits, 1)
        self.hard_bits = check_int("binary", "hard_bits", hard_bits, 1)
        for name, k in (("easy_bits", self.easy_bits), ("hard_bits", self.hard_bits)):
            if k > self.domain_bits:
                raise ActstoreError(
                    f"binary parameter {name}={k} exceeds domain_bits={self.domain_bits}; "
                    "a feature is computed from bits of its own domain"
                )
        self.easy_predictivity = check_prob("binary", "easy_predictivity", easy_predictivity)
        self.hard_predictivity = check_prob("binary", "hard_predictivity", hard_predictivity)
        self.n_train = check_int("binary", "n_train", n_train, 2)
        self.n_val = check_int("binary", "n_val", n_val, 2)
        self.n_probe = check_int("binary", "n_probe", n_probe, 4)
        self.probe_seed = check_int("binary", "probe_seed", probe_seed, 0)

    def params(self) -> dict[str, Any]:
        return self.attributes("domain_bits", "easy_bits", "hard_bits", "easy_predictivity",
                               "hard_predictivity", "n_train", "n_val", "n_probe", "probe_seed")

    def input_spec(self) -> InputSpec:
        return InputSpec("bits", (2 * self.domain_bits,))

    def encode(self, rng: np.random.Generator, easy: np.ndarray, hard: np.ndarray) -> np.ndarray:
        """Bits (uint8, shape (n, 2 * domain_bits)) uniform given the two feature values."""
        d = self.domain_bits
        bits = rng.integers(0, 2, size=(len(easy), 2 * d), dtype=np.uint8)
        set_parity(bits[:, :d], self.easy_bits, easy)
        set_parity(bits[:, d:], self.hard_bits, hard)
        return bits

    def draw(self, rng: np.random.Generator, n: int) -> Split:
        """``n`` samples: balanced label, features flipped with probability 1 - predictivity."""
        y = rng.permutation(np.arange(n) % 2).astype(np.int64)
        easy = np.where(rng.random(n) < self.easy_predictivity, y, 1 - y)
        hard = np.where(rng.random(n) < self.hard_predictivity, y, 1 - y)
        return Split(self.encode(rng, easy, hard), {"label": y, "easy": easy, "hard": hard})

    def make(self, targets: tuple[str, ...], seed: int) -> TaskData:
        hard = list(range(self.domain_bits, self.domain_bits + self.hard_bits))
        return self.drawn_task(targets, seed,
                               {"easy_bits": list(range(self.easy_bits)), "hard_bits": hard})

    def probe_params(self) -> dict[str, Any]:
        """The parameters the probe set depends on."""
        return self.attributes("domain_bits", "easy_bits", "hard_bits", "n_probe", "probe_seed")

    def probe_set(self) -> Any:
        """Inputs whose ``easy`` and ``hard`` features are independent and balanced."""
        from actstore.store import ProbeSet

        rng = np.random.default_rng([self.probe_seed, _PROBE])
        idx = rng.permutation(self.n_probe)
        easy = (idx % 2).astype(np.int64)
        hard = ((idx // 2) % 2).astype(np.int64)
        pp = self.probe_params()
        return ProbeSet(
            name=f"binary-{2 * self.domain_bits}bit-n{self.n_probe}-{params_hash(pp)}",
            labels={"easy": easy, "hard": hard},
            inputs=self.encode(rng, easy, hard),
            attrs={"generator": "actstore.training.BinaryEasyHard", "params": pp},
        )
