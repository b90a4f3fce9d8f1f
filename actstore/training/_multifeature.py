"""Multi-feature tasks (Lampinen, Chan & Hermann 2024): several binary features with their own
output heads and equal loss weight, differing in complexity, prevalence and output position.

Each feature owns a domain of ``domain_bits`` input bits and is the parity of the first
``bits`` of them (1 bit: linear; 2: XOR; k: k-bit parity); the other bits of the domain are
uniform noise. A feature is 1 with probability ``prevalence``. In sequence models, feature
``f`` is reported by output token ``position`` (the query tokens follow the input bits).
Learning order (one feature trained first) is a trainer option: ``first_head``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.training._checks import check_int, check_prob, check_table_keys
from actstore.training._data import (
    Dataset,
    Head,
    InputSpec,
    Split,
    TaskData,
    params_hash,
    set_parity,
)

__all__ = ["DEFAULT_FEATURES", "MultiFeature"]

DEFAULT_FEATURES: tuple[dict[str, Any], ...] = (
    {"name": "linear", "bits": 1},
    {"name": "parity3", "bits": 3},
)
_FEATURE_KEYS = ("name", "bits", "prevalence", "position")
_PROBE = 6  # the stream of the probe set (training and validation: 1 and 2)


def _feature_specs(features: Any, domain_bits: int) -> list[dict[str, Any]]:
    if not isinstance(features, (list, tuple)) or not features:
        raise ActstoreError(
            "multifeature parameter features must be a non-empty list of tables like "
            "{name = 'linear', bits = 1, prevalence = 0.5, position = 0}"
        )
    specs = []
    for i, f in enumerate(features):
        check_table_keys(f, _FEATURE_KEYS, f"multifeature feature #{i}")
        name = f.get("name")
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("heldout"):
            raise ActstoreError(
                f"multifeature feature #{i} needs a name that is a plain identifier, got {name!r}"
            )
        spec = {
            "name": name,
            "bits": check_int("multifeature", f"{name}.bits", f.get("bits", 1), 1, domain_bits),
            "prevalence": check_prob("multifeature", f"{name}.prevalence",
                                     f.get("prevalence", 0.5)),
            "position": check_int("multifeature", f"{name}.position", f.get("position", i), 0),
        }
        specs.append(spec)
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise ActstoreError(f"multifeature feature names must be unique, got {names}")
    positions = [s["position"] for s in specs]
    if len(set(positions)) != len(positions):
        raise ActstoreError(
            f"multifeature output positions must differ (one feature per output token), "
            f"got {positions}"
        )
    return specs


class MultiFeature(Dataset):
    """Bit-vector inputs with several features of chosen complexity, prevalence and position.

    Parameters
    ----------
    features : list of dict
        One table per feature: ``name``, ``bits`` (parity order, default 1), ``prevalence``
        (P(feature = 1), default 0.5), ``position`` (output token, default its index).
    domain_bits : int
        Input bits per feature.
    noise_bits : int
        Extra uniform input bits carrying no feature.
    n_train, n_val : int
        Training and validation samples.
    n_probe : int
        Probe samples; in the probe set every feature is balanced and independent.
    probe_seed : int
        Seed of the probe stimuli.
    """

    name = "multifeature"

    def __init__(
        self,
        *,
        features: list[dict[str, Any]] | tuple[dict[str, Any], ...] = DEFAULT_FEATURES,
        domain_bits: int = 8,
        noise_bits: int = 0,
        n_train: int = 4096,
        n_val: int = 1024,
        n_probe: int = 1024,
        probe_seed: int = 0,
    ):
        self.domain_bits = check_int("multifeature", "domain_bits", domain_bits, 1, 4096)
        self.specs = _feature_specs(features, self.domain_bits)
        self.noise_bits = check_int("multifeature", "noise_bits", noise_bits, 0, 4096)
        self.n_train = check_int("multifeature", "n_train", n_train, 2)
        self.n_val = check_int("multifeature", "n_val", n_val, 2)
        self.n_probe = check_int("multifeature", "n_probe", n_probe, 2)
        self.probe_seed = check_int("multifeature", "probe_seed", probe_seed, 0)
        self.features = {s["name"]: 2 for s in self.specs}
        self.targets = tuple(self.features)

    def params(self) -> dict[str, Any]:
        return {
            "features": [dict(s) for s in self.specs],
            **self.attributes("domain_bits", "noise_bits", "n_train", "n_val", "n_probe",
                              "probe_seed"),
        }

    def input_spec(self) -> InputSpec:
        return InputSpec("bits", (len(self.specs) * self.domain_bits + self.noise_bits,))

    def heads(self, targets: tuple[str, ...]) -> tuple[Head, ...]:
        """Heads with each feature's own output position."""
        super().heads(targets)
        pos = {s["name"]: s["position"] for s in self.specs}
        return tuple(Head(t, 2, pos[t]) for t in targets)

    def encode(self, rng: np.random.Generator, values: dict[str, np.ndarray]) -> np.ndarray:
        """Bits (uint8, shape (n, L)) uniform given each feature's value."""
        n = len(next(iter(values.values())))
        bits = rng.integers(0, 2, size=(n, self.input_spec().shape[0]), dtype=np.uint8)
        d = self.domain_bits
        for i, s in enumerate(self.specs):
            set_parity(bits[:, i * d : (i + 1) * d], s["bits"], values[s["name"]])
        return bits

    def draw(self, rng: np.random.Generator, n: int) -> Split:
        """``n`` samples; feature ``f`` is 1 with probability ``f.prevalence``, independently."""
        values = {
            s["name"]: (rng.random(n) < s["prevalence"]).astype(np.int64) for s in self.specs
        }
        return Split(self.encode(rng, values), values)

    def make(self, targets: tuple[str, ...], seed: int) -> TaskData:
        d = self.domain_bits
        domains = {s["name"]: [i * d, (i + 1) * d] for i, s in enumerate(self.specs)}
        return self.drawn_task(targets, seed, {"domains": domains})

    def probe_params(self) -> dict[str, Any]:
        """The parameters the probe set depends on (not prevalence nor position)."""
        return {
            "features": [{"name": s["name"], "bits": s["bits"]} for s in self.specs],
            **self.attributes("domain_bits", "noise_bits", "n_probe", "probe_seed"),
        }

    def probe_set(self) -> Any:
        """Inputs on which every feature is balanced (exactly, up to one sample) and
        independent of the others."""
        from actstore.store import ProbeSet

        rng = np.random.default_rng([self.probe_seed, _PROBE])
        values = {s["name"]: rng.permutation(np.arange(self.n_probe) % 2).astype(np.int64)
                  for s in self.specs}
        pp = self.probe_params()
        return ProbeSet(
            name=f"multifeature-{self.input_spec().shape[0]}bit-n{self.n_probe}-{params_hash(pp)}",
            labels=values,
            inputs=self.encode(rng, values),
            attrs={"generator": "actstore.training.MultiFeature", "params": pp},
        )
