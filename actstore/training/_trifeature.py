"""Trifeature: 10 shapes x 10 textures x 10 colours, with held-out-combination splits and a
correlated variant (Hermann & Lampinen 2020; see docs/training.md).

Held-out combinations. For a task whose target (anchor) feature is ``A``, every value ``a``
of ``A`` is shown in training with only ``10 - n_heldout`` values of each non-target feature;
the other combinations form the validation set. The held-out values rotate over ``a`` (a
seeded permutation of the values, shifted by ``a``), so every value of every feature is seen
in training, each value is held out for exactly ``n_heldout`` anchor values, and the classes
stay balanced. The design depends on ``cv_split`` only (not on the run seed): all seeds of a
task share a split, and ``cv_split = 0..4`` gives the five cross-validation splits.

Correlated variant. A seeded one-to-one pairing links the values of two features; with
probability ``p`` an image takes the paired value, otherwise a uniformly random other value,
in training and validation alike (``p = 0.1`` is independence for 10 values).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from actstore._errors import ActstoreError
from actstore.training._checks import check_int, check_prob
from actstore.training._data import Dataset, InputSpec, Split, TaskData, params_hash
from actstore.training._render import (
    COLORS,
    SHAPES,
    TEXTURES,
    default_texture_period,
    render,
    sample_render_params,
)

__all__ = ["FEATURES", "VALUES", "Trifeature", "heldout_mask", "pairing"]

FEATURES: tuple[str, ...] = ("shape", "texture", "color")
VALUES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "texture": TEXTURES, "color": tuple(COLORS)}
N_VALUES = 10
#: Stream tags that keep the random draws of different purposes independent.
_SPLIT, _PAIR, _TRAIN, _VAL, _PROBE_COMBOS, _PROBE_RENDER = 0x5B17, 0x9A12, 1, 2, 3, 4


def heldout_mask(anchor: str, n_heldout: int, cv_split: int = 0) -> np.ndarray:
    """Which (shape, texture, colour) combinations a task holds out of training.

    Parameters
    ----------
    anchor : {"shape", "texture", "color"}
        The task's target feature; the other two features have values held out.
    n_heldout : int
        Values of each non-target feature held out per anchor value (0 to 9).
    cv_split : int
        Index of the split (seeds the rotation of held-out values).

    Returns
    -------
    numpy.ndarray of bool, shape (10, 10, 10)
        Indexed ``[shape, texture, color]``; ``True`` marks a held-out combination.
    """
    if anchor not in FEATURES:
        raise ActstoreError(f"unknown Trifeature feature {anchor!r}; use one of {FEATURES}")
    if not 0 <= n_heldout < N_VALUES:
        raise ActstoreError(
            f"impossible split: n_heldout={n_heldout} of {N_VALUES} values per non-target "
            f"feature; use 0 to {N_VALUES - 1} so that some values remain for training"
        )
    a = FEATURES.index(anchor)
    rng = np.random.default_rng([int(cv_split), _SPLIT, a])  # one design per target feature
    allowed = np.ones((N_VALUES,) * 3, dtype=bool)
    for f in range(3):
        if f == a:
            continue
        perm = rng.permutation(N_VALUES)
        offset = int(rng.integers(N_VALUES))
        held = np.zeros((N_VALUES, N_VALUES), dtype=bool)  # (anchor value, value of f)
        for av in range(N_VALUES):
            held[av, perm[(av + offset + np.arange(n_heldout)) % N_VALUES]] = True
        shape = [1, 1, 1]
        shape[a], shape[f] = N_VALUES, N_VALUES
        allowed &= ~held.reshape(shape) if a < f else ~held.T.reshape(shape)
    return ~allowed


def pairing(cv_split: int = 0) -> np.ndarray:
    """The seeded one-to-one pairing of the correlated variant: value ``i`` -> ``pairing[i]``.

    Parameters
    ----------
    cv_split : int
        Cross-validation split; each split has its own pairing.

    Returns
    -------
    ndarray of shape (10,), int64
        A permutation of the 10 values of a feature.
    """
    return np.random.default_rng([int(cv_split), _PAIR]).permutation(N_VALUES)


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    return check_int("trifeature", name, value, lo, hi)


class Trifeature(Dataset):
    """Trifeature images with held-out-combination splits or a correlated feature pair.

    Parameters
    ----------
    image_size : int
        Image side in pixels (32 for CPU studies; 224 as in the original study).
    renders : int
        Training renders per combination.
    n_heldout : int, optional
        Values of each non-target feature held out per target value (default 3; 0 trains on
        all combinations). Must be 0 with ``p``.
    cv_split : int
        Which of the held-out splits (0 to 4 are the five CV splits) and which pairing.
    p : float, optional
        Correlated variant: probability that ``correlate[1]`` takes the value paired with
        ``correlate[0]`` (0.1 is independence, 1.0 full redundancy).
    correlate : list of two str
        The correlated feature pair.
    n_val : int
        Validation images (held-out combinations, or the training distribution).
    texture_period : float, optional
        Texture period in pixels (default: 10 px at 224 px, at least 4).
    probe_renders : int
        Probe renders per combination.
    probe_combos : int, optional
        Use a seeded subset of this many combinations in the probe set (default all 1,000).
    probe_seed : int
        Seed of the probe stimuli (shared by every run).
    """

    name = "trifeature"

    def __init__(
        self,
        *,
        image_size: int = 32,
        renders: int = 10,
        n_heldout: int | None = None,
        cv_split: int = 0,
        p: float | None = None,
        correlate: list[str] | tuple[str, ...] = ("shape", "color"),
        n_val: int = 1000,
        texture_period: float | None = None,
        probe_renders: int = 1,
        probe_combos: int | None = None,
        probe_seed: int = 0,
    ):
        self.features = dict.fromkeys(FEATURES, N_VALUES)
        self.targets = FEATURES
        self.image_size = _check_int("image_size", image_size, 8, 1024)
        self.renders = _check_int("renders", renders, 1)
        self.cv_split = _check_int("cv_split", cv_split, 0)
        if p is not None:
            p = check_prob("trifeature", "p", p)
        self.p = p
        if n_heldout is None:
            n_heldout = 3 if p is None else 0
        self.n_heldout = _check_int("n_heldout", n_heldout, 0)
        if self.n_heldout >= N_VALUES:
            raise ActstoreError(
                f"impossible split: n_heldout={self.n_heldout} of {N_VALUES} values per "
                f"non-target feature; use 0 to {N_VALUES - 1}"
            )
        if p is not None and self.n_heldout:
            raise ActstoreError(
                "the correlated variant (p) draws all combinations; set n_heldout = 0 with p"
            )
        corr = tuple(correlate)
        if len(corr) != 2 or len(set(corr)) != 2 or not set(corr) <= set(FEATURES):
            raise ActstoreError(
                f"trifeature parameter correlate={list(corr)} must name two different "
                f"features of {', '.join(FEATURES)}"
            )
        self.correlate = corr
        self.n_val = _check_int("n_val", n_val, 1)
        if texture_period is not None and not (
            isinstance(texture_period, (int, float)) and texture_period >= 2
        ):
            raise ActstoreError(f"texture_period={texture_period!r} must be >= 2 pixels")
        self.texture_period = (
            default_texture_period(self.image_size)
            if texture_period is None
            else float(texture_period)
        )
        self.probe_renders = _check_int("probe_renders", probe_renders, 1)
        self.probe_combos = (
            None if probe_combos is None else _check_int("probe_combos", probe_combos, 1, 1000)
        )
        self.probe_seed = _check_int("probe_seed", probe_seed, 0)

    def params(self) -> dict[str, Any]:
        return {
            **self.attributes("image_size", "renders", "n_heldout", "cv_split", "p"),
            "correlate": list(self.correlate),
            **self.attributes("n_val", "texture_period", "probe_renders", "probe_combos",
                              "probe_seed"),
        }

    def input_spec(self) -> InputSpec:
        return InputSpec("image", (3, self.image_size, self.image_size))

    # -- drawing -------------------------------------------------------------------------------
    def render_combos(self, combos: np.ndarray, rng: np.random.Generator) -> Split:
        """Render one image per row of ``combos`` (int array (n, 3): shape, texture, colour)."""
        params = sample_render_params(
            rng, combos[:, 0], combos[:, 1], combos[:, 2], self.image_size
        )
        images = render(params, self.image_size, self.texture_period)
        labels = {f: combos[:, i].astype(np.int64) for i, f in enumerate(FEATURES)}
        return Split(images, labels)

    def sample_correlated(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` combinations of the correlated variant, int array of shape (n, 3)."""
        assert self.p is not None
        f1, f2 = (FEATURES.index(f) for f in self.correlate)
        pair = pairing(self.cv_split)
        combos = rng.integers(0, N_VALUES, size=(n, 3))
        match = rng.random(n) < self.p
        other = (pair[combos[:, f1]] + 1 + rng.integers(0, N_VALUES - 1, n)) % N_VALUES
        combos[:, f2] = np.where(match, pair[combos[:, f1]], other)
        return combos

    def make(self, targets: tuple[str, ...], seed: int) -> TaskData:
        """Training and validation images of a task.

        With held-out combinations, the first target is the anchor feature of the split.
        """
        self.heads(targets)  # checks the names
        anchor = targets[0]
        rng_train = np.random.default_rng([int(seed), _TRAIN])
        rng_val = np.random.default_rng([int(seed), _VAL])
        all_combos = np.array(list(itertools.product(range(N_VALUES), repeat=3)))  # (1000, 3)
        info: dict[str, Any] = {"anchor": anchor}
        if self.p is not None:
            train = self.sample_correlated(rng_train, self.renders * len(all_combos))
            val = self.sample_correlated(rng_val, self.n_val)
            info.update(
                variant="correlated", p=self.p, correlate=list(self.correlate),
                pairing=pairing(self.cv_split).tolist(),
            )
        elif self.n_heldout:
            held = heldout_mask(anchor, self.n_heldout, self.cv_split).reshape(-1)
            train = np.repeat(all_combos[~held], self.renders, axis=0)
            held_combos = all_combos[held]
            val = held_combos[np.resize(rng_val.permutation(len(held_combos)), self.n_val)]
            info.update(
                variant="heldout", n_heldout=self.n_heldout, cv_split=self.cv_split,
                n_train_combos=int((~held).sum()), n_heldout_combos=int(held.sum()),
            )
        else:
            train = np.repeat(all_combos, self.renders, axis=0)
            val = all_combos[rng_val.integers(0, len(all_combos), self.n_val)]
            info.update(variant="all")
        return TaskData(
            train=self.render_combos(train, rng_train),
            val=self.render_combos(val, rng_val),
            input_spec=self.input_spec(),
            heads=self.heads(targets),
            info=info,
        )

    # -- probe set -----------------------------------------------------------------------------
    def probe_params(self) -> dict[str, Any]:
        """The parameters the probe set depends on."""
        return {
            **self.attributes("image_size", "texture_period", "probe_renders", "probe_combos",
                              "probe_seed", "n_heldout"),
            "cv_split": self.cv_split if self.n_heldout else None,
        }

    def probe_set(self) -> Any:
        """Renders of every combination (or a seeded subset) with all feature labels.

        Labels: ``shape``, ``texture``, ``color`` (int64 value indices) and, with held-out
        splits, ``heldout_<feature>`` (1 where the combination is held out of training for
        the task whose target is that feature).
        """
        from actstore.store import ProbeSet

        combos = np.array(list(itertools.product(range(N_VALUES), repeat=3)))
        if self.probe_combos is not None:
            pick = np.random.default_rng([self.probe_seed, _PROBE_COMBOS]).permutation(
                len(combos)
            )[: self.probe_combos]
            combos = combos[np.sort(pick)]
        combos = np.repeat(combos, self.probe_renders, axis=0)
        split = self.render_combos(combos, np.random.default_rng([self.probe_seed, _PROBE_RENDER]))
        labels = dict(split.labels)
        if self.n_heldout:
            for f in FEATURES:
                held = heldout_mask(f, self.n_heldout, self.cv_split)
                labels[f"heldout_{f}"] = held[combos[:, 0], combos[:, 1], combos[:, 2]].astype(
                    np.int64
                )
        pp = self.probe_params()
        name = f"trifeature-{self.image_size}px-n{len(combos)}-{params_hash(pp)}"
        return ProbeSet(
            name=name,
            labels=labels,
            inputs=split.inputs,
            attrs={
                "generator": "actstore.training.Trifeature",
                "params": pp,
                "values": {f: list(v) for f, v in VALUES.items()},
            },
        )
