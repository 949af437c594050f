"""CORINE Land Cover 2018 nomenclature and the BigEarthNet 43- and 19-class label sets.

The Level-3 table (code, name, 19-class name, legend colour) is the package data file
``data/clc2018_nomenclature.csv``; Level-1 and Level-2 names are the standard CLC legend
names (EEA ``clc_legend``). Everything here is derived from those two sources once, at import.

Codes are plain ``int`` (``111`` ... ``523``); ``999`` is the CLC vector's NODATA/UNLABELED
code and ``0`` means "no CLC polygon" in rasterized reference maps. Neither has a class name.

Class orders (stored in the dataset manifest through :func:`class_orders`):

* ``LABELS_43``: the paper's 43 classes = the 44 CLC Level-3 classes minus 335 (Glaciers and
  perpetual snow), in ascending CLC code order. This is BigEarthNet v1's original order (the
  order of ``label_indices.json``'s ``original_labels``), **not** alphabetical.
* ``LABELS_19``: the 19 classes of Sumbul et al. 2021 / reBEN in order of first appearance when
  the 43 classes are walked in the order above (``label_indices.json``'s
  ``BigEarthNet-19_labels``; TorchGeo's order). Also **not** alphabetical.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from bigearthnet.errors import UnknownLabelError

NO_CLC_CODE = 0
"""Reference-map value of a pixel whose centre lies in no CLC polygon."""

UNLABELED_CODE = 999
"""CLC vector code for NODATA / unclassified areas (no 43- or 19-class name)."""

GLACIER_CODE = 335
"""Glaciers and perpetual snow: a CLC class that does not occur in BigEarthNet (44 - 1 = 43)."""

LEVEL1_NAMES: dict[int, str] = {
    1: "Artificial surfaces",
    2: "Agricultural areas",
    3: "Forest and semi natural areas",
    4: "Wetlands",
    5: "Water bodies",
}
"""CLC Level-1 code -> name (EEA legend)."""

LEVEL2_NAMES: dict[int, str] = {
    11: "Urban fabric",
    12: "Industrial, commercial and transport units",
    13: "Mine, dump and construction sites",
    14: "Artificial, non-agricultural vegetated areas",
    21: "Arable land",
    22: "Permanent crops",
    23: "Pastures",
    24: "Heterogeneous agricultural areas",
    31: "Forests",
    32: "Scrub and/or herbaceous vegetation associations",
    33: "Open spaces with little or no vegetation",
    41: "Inland wetlands",
    42: "Maritime wetlands",
    51: "Inland waters",
    52: "Marine waters",
}
"""CLC Level-2 code -> name (EEA legend)."""


@dataclass(frozen=True)
class ClcClass:
    """One CLC 2018 Level-3 class.

    Args:
        code: three-digit Level-3 code, e.g. ``311``.
        name: Level-3 name, which is also its BigEarthNet 43-class name (``None`` never occurs
            here; 335 has a name but is not among the 43 classes, see ``in_43``).
        name_19: 19-class name, or ``None`` when the class is dropped in the 19-class scheme.
        level2_code: parent Level-2 code, e.g. ``31``.
        level2_name: parent Level-2 name, e.g. ``"Forests"``.
        level1_code: parent Level-1 code, e.g. ``3``.
        level1_name: parent Level-1 name.
        rgb: official legend colour.
    """

    code: int
    name: str
    name_19: str | None
    level2_code: int
    level2_name: str
    level1_code: int
    level1_name: str
    rgb: tuple[int, int, int]

    @property
    def in_43(self) -> bool:
        """Whether the class is one of the paper's 43 classes (all but 335)."""
        return self.code != GLACIER_CODE


def _load_classes() -> tuple[ClcClass, ...]:
    text = resources.files("bigearthnet.data").joinpath("clc2018_nomenclature.csv").read_text()
    classes = []
    for row in csv.DictReader(text.splitlines()):
        code = int(row["code"])
        if code == UNLABELED_CODE:
            continue
        classes.append(
            ClcClass(
                code=code,
                name=row["name"],
                name_19=row["name_19"] or None,
                level2_code=code // 10,
                level2_name=LEVEL2_NAMES[code // 10],
                level1_code=code // 100,
                level1_name=LEVEL1_NAMES[code // 100],
                rgb=(int(row["r"]), int(row["g"]), int(row["b"])),
            )
        )
    classes.sort(key=lambda c: c.code)
    return tuple(classes)


CLC_CLASSES: tuple[ClcClass, ...] = _load_classes()
"""The 44 CLC 2018 Level-3 classes in ascending code order."""

CLASS_BY_CODE: dict[int, ClcClass] = {c.code: c for c in CLC_CLASSES}

CODES_44: tuple[int, ...] = tuple(c.code for c in CLC_CLASSES)
"""The 44 Level-3 codes, ascending."""

KNOWN_CODES: frozenset[int] = frozenset(CODES_44) | {UNLABELED_CODE}
"""Codes accepted in a CLC vector layer (the 44 Level-3 codes and 999)."""

CODES_43: tuple[int, ...] = tuple(c.code for c in CLC_CLASSES if c.in_43)
"""The codes of the 43 classes, in ``LABELS_43`` order."""

LABELS_43: tuple[str, ...] = tuple(c.name for c in CLC_CLASSES if c.in_43)
"""BigEarthNet v1's 43 class names in official order (ascending CLC code)."""

LABELS_19: tuple[str, ...] = tuple(
    dict.fromkeys(c.name_19 for c in CLC_CLASSES if c.in_43 and c.name_19 is not None)
)
"""The 19 class names in official order (first appearance walking ``LABELS_43``)."""

CODE_TO_NAME_43: dict[int, str | None] = {
    **{c.code: (c.name if c.in_43 else None) for c in CLC_CLASSES},
    UNLABELED_CODE: None,
    NO_CLC_CODE: None,
}
"""Code -> 43-class name; ``None`` for 335, 999 and 0."""

CODE_TO_NAME_19: dict[int, str | None] = {
    **{c.code: c.name_19 for c in CLC_CLASSES},
    UNLABELED_CODE: None,
    NO_CLC_CODE: None,
}
"""Code -> 19-class name; ``None`` for classes dropped in the 19-class scheme, 999 and 0."""

NAME_43_TO_NAME_19: dict[str, str | None] = {c.name: c.name_19 for c in CLC_CLASSES if c.in_43}
"""43-class name -> 19-class name (``None`` when the class is dropped)."""

INDEX_43: dict[str, int] = {n: i for i, n in enumerate(LABELS_43)}
INDEX_19: dict[str, int] = {n: i for i, n in enumerate(LABELS_19)}

_ORDERS: dict[int, tuple[dict[str, int], int]] = {
    43: (INDEX_43, len(LABELS_43)),
    19: (INDEX_19, len(LABELS_19)),
}


def _order_index(order: Sequence[str] | int) -> tuple[dict[str, int], int]:
    if isinstance(order, int):
        if order not in _ORDERS:
            raise UnknownLabelError(f"unknown nomenclature size {order}; use 43 or 19")
        return _ORDERS[order]
    names = tuple(order)
    return {n: i for i, n in enumerate(names)}, len(names)


def multi_hot(names: Iterable[str], order: Sequence[str] | int = 43) -> np.ndarray:
    """Encode class names as a multi-hot vector.

    Args:
        names: class names of one patch (duplicates allowed).
        order: the ordered class list (e.g. ``LABELS_19``), or ``43`` / ``19`` for the official
            orders.

    Returns:
        ``np.uint8`` vector of length ``len(order)`` with 1 where a class is present.

    Raises:
        UnknownLabelError: a name is not in ``order``.
    """
    index, size = _order_index(order)
    out = np.zeros(size, dtype=np.uint8)
    for name in names:
        i = index.get(name)
        if i is None:
            raise UnknownLabelError(
                f"class name {name!r} is not in the {size}-class nomenclature; "
                "check the spelling against bigearthnet.clc.nomenclature.LABELS_43/LABELS_19"
            )
        out[i] = 1
    return out


def multi_hot_matrix(
    labels: Sequence[Iterable[str]], order: Sequence[str] | int = 43
) -> np.ndarray:
    """Encode many patches' class names at once.

    Args:
        labels: one iterable of names per patch.
        order: as in :func:`multi_hot`.

    Returns:
        ``np.uint8`` array ``(len(labels), len(order))``.
    """
    _, size = _order_index(order)
    out = np.zeros((len(labels), size), dtype=np.uint8)
    for k, names in enumerate(labels):
        out[k] = multi_hot(names, order)
    return out


def code_lookup_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense lookup tables indexed by CLC code (0..999) for vectorised label rules.

    Returns:
        ``(idx43, idx19, known)``: ``int16`` arrays of length 1000 holding the class index in
        ``LABELS_43`` / ``LABELS_19`` or -1 when the code has no such class, and a ``bool``
        array that is True for the codes in :data:`KNOWN_CODES` and for 0.
    """
    idx43 = np.full(1000, -1, dtype=np.int16)
    idx19 = np.full(1000, -1, dtype=np.int16)
    known = np.zeros(1000, dtype=bool)
    known[NO_CLC_CODE] = True
    for code in KNOWN_CODES:
        known[code] = True
        n43 = CODE_TO_NAME_43[code]
        n19 = CODE_TO_NAME_19[code]
        if n43 is not None:
            idx43[code] = INDEX_43[n43]
        if n19 is not None:
            idx19[code] = INDEX_19[n19]
    return idx43, idx19, known


def class_orders() -> dict[str, object]:
    """The class orders to store in the dataset manifest.

    Multi-hot vectors in the dataset index classes in exactly these orders:

    * ``labels_43``: BigEarthNet v1 order = ascending CLC Level-3 code, 335 omitted;
    * ``labels_19``: reBEN / Sumbul et al. 2021 order = first appearance of each 19-class name
      when walking ``labels_43`` (TorchGeo's ``class_sets[19]`` order);
    * ``clc_codes_43``: the CLC code of each entry of ``labels_43``;
    * ``map_43_to_19``: 43-class name -> 19-class name or ``None`` (dropped).

    Neither list is alphabetical; tools that sort names alphabetically index differently.

    Returns:
        A JSON-serialisable dict.
    """
    return {
        "labels_43": list(LABELS_43),
        "labels_19": list(LABELS_19),
        "clc_codes_43": list(CODES_43),
        "map_43_to_19": dict(NAME_43_TO_NAME_19),
        "order_43": "ascending CORINE Land Cover Level-3 code (BigEarthNet v1 label_indices.json)",
        "order_19": "first appearance in the 43->19 mapping (BigEarthNet-19 label_indices.json)",
    }
