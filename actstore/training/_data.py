"""What every dataset hands to a model and the trainer: inputs, labels, heads, probe stimuli."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from actstore._errors import ActstoreError

__all__ = ["Dataset", "Head", "InputSpec", "Split", "TaskData", "params_hash", "set_parity"]


@dataclass(frozen=True)
class InputSpec:
    """Kind and shape of one input sample.

    Attributes
    ----------
    kind : {"image", "bits"}
        ``"image"``: uint8 arrays of shape ``(3, H, W)``; ``"bits"``: uint8 0/1 vectors of
        shape ``(L,)``, which sequence models read as ``L`` tokens.
    shape : tuple of int
        Shape of one sample.
    """

    kind: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Head:
    """One output of a network: a feature it is trained to report.

    Attributes
    ----------
    name : str
        Feature name (a label of the dataset).
    n_classes : int
        Number of classes of the feature.
    position : int
        Output token that reports it, in sequence models (ignored by other models).
    """

    name: str
    n_classes: int
    position: int = 0


@dataclass
class Split:
    """A set of samples with their labels.

    Attributes
    ----------
    inputs : uint8 array of shape (n, *InputSpec.shape)
    labels : dict of str to int64 array of shape (n,)
    """

    inputs: np.ndarray
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass
class TaskData:
    """Everything a run trains and evaluates on.

    Attributes
    ----------
    train, val : Split
        Training samples and validation samples (for Trifeature with held-out combinations,
        ``val`` holds only held-out combinations).
    input_spec : InputSpec
    heads : tuple of Head
        The outputs, in output order; each has equal loss weight.
    info : dict
        JSON description of how the data were drawn (split, held-out combinations...).
    """

    train: Split
    val: Split
    input_spec: InputSpec
    heads: tuple[Head, ...]
    info: dict[str, Any] = field(default_factory=dict)


def params_hash(obj: Any, n: int = 8) -> str:
    """Short sha256 of a JSON-serialisable object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def set_parity(block: np.ndarray, k: int, value: np.ndarray) -> None:
    """Make the parity of the first ``k`` bits of each row of ``block`` equal ``value``.

    The first ``k - 1`` bits keep their (uniform) values and bit ``k - 1`` is set, so each row
    is uniform among the patterns with the required parity. ``k = 1`` sets the bit itself.

    Parameters
    ----------
    block : uint8 array of shape (n, d), modified in place
    k : int
        Number of bits whose XOR is the feature.
    value : array of shape (n,) with values 0/1
    """
    head = block[:, : k - 1].sum(axis=1) % 2 if k > 1 else np.zeros(len(block), dtype=np.int64)
    block[:, k - 1] = (head + value) % 2


class Dataset(ABC):
    """A procedurally generated, seeded dataset whose features are all known.

    Subclasses take their parameters as keyword arguments, check them (raising
    :class:`ActstoreError`), and expose them through :meth:`params`.
    """

    #: Registry name.
    name: ClassVar[str]
    #: Every labelled feature -> number of classes.
    features: dict[str, int]
    #: Features a network can be trained to report (task heads).
    targets: tuple[str, ...]

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Resolved parameters (defaults filled in), JSON-serialisable."""

    def attributes(self, *names: str) -> dict[str, Any]:
        """``{name: self.<name>}`` for each name, in order (for :meth:`params`)."""
        return {n: getattr(self, n) for n in names}

    @abstractmethod
    def input_spec(self) -> InputSpec:
        """Kind and shape of one input sample."""

    def heads(self, targets: tuple[str, ...]) -> tuple[Head, ...]:
        """The output heads reporting ``targets`` (positions in target order)."""
        for t in targets:
            if t not in self.targets:
                raise ActstoreError(
                    f"dataset {self.name!r} cannot train feature {t!r}; its targets: "
                    f"{', '.join(self.targets)}"
                )
        return tuple(Head(t, self.features[t], i) for i, t in enumerate(targets))

    @abstractmethod
    def make(self, targets: tuple[str, ...], seed: int) -> TaskData:
        """Draw the training and validation sets of a task (deterministic in ``seed``)."""

    def drawn_task(self, targets: tuple[str, ...], seed: int, info: dict[str, Any]) -> TaskData:
        """The task of a dataset whose samples are drawn independently by ``self.draw(rng,
        n)``: ``self.n_train`` training and ``self.n_val`` validation samples from streams 1
        and 2 of ``seed`` (the probe set uses a stream of its own)."""
        heads = self.heads(targets)
        me: Any = self  # draw, n_train and n_val belong to the datasets that draw
        return TaskData(
            train=me.draw(np.random.default_rng([int(seed), 1]), me.n_train),
            val=me.draw(np.random.default_rng([int(seed), 2]), me.n_val),
            input_spec=self.input_spec(),
            heads=heads,
            info=info,
        )

    @abstractmethod
    def probe_params(self) -> dict[str, Any]:
        """The parameters the probe set depends on (JSON)."""

    @abstractmethod
    def probe_set(self) -> Any:
        """The fixed probe stimuli of this dataset (an :class:`actstore.store.ProbeSet`).

        It depends on the rendering parameters and ``probe_*`` parameters only, never on the
        task or the run seed, so that every run on the same inputs shares it.
        """
