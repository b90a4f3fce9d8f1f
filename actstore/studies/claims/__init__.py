"""The claims of each built-in study's paper (:class:`actstore.studies.Claim` entries).

``CLAIMS[study]`` is the findings table of that study, in order; a new experiment adds its
claim as one more entry of its paper's module.
"""

from __future__ import annotations

from actstore.studies._findings import Claim
from actstore.studies.claims.fel2024 import CLAIMS as FEL2024
from actstore.studies.claims.hermann2020 import CLAIMS as HERMANN2020
from actstore.studies.claims.lampinen2024 import CLAIMS as LAMPINEN2024
from actstore.studies.claims.li2016 import CLAIMS as LI2016

__all__ = ["CLAIMS"]

#: study name -> its paper's claims
CLAIMS: dict[str, tuple[Claim, ...]] = {
    "hermann2020": HERMANN2020,
    "lampinen2024": LAMPINEN2024,
    "fel2024": FEL2024,
    "li2016": LI2016,
}
