"""The model registry: every model the package trains, one entry each.

Adding a model of an existing family (an S-CNN on other bands, say) is one entry here; a new
architecture also adds its builder to :data:`bigearthnet.train.models.BUILDERS`. The CLI
choices, the config validation, the demo's epochs and the report's Table-4 rows all come from
this table. It imports no torch, so the CLI and the report stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class ModelSpec:
    """One trainable model.

    Args:
        name: the config / CLI name.
        family: which builder makes it (``BUILDERS`` of :mod:`bigearthnet.train.models`).
        inputs: ``"rgb"`` (B04, B03, B02) or ``"all"`` (the 12 bands B01..B12).
        display: the name in reports.
        pretrained: accepts ``weights="imagenet"``.
        paper_name: the paper's name of the model it stands for (Table 4).
        paper_scores: the paper's Table 4 row (P and R in %, F1 and F2 as fractions).
        demo_epochs: epochs in ``bigearthnet run`` (the demo).
    """

    name: str
    family: Literal["s-cnn", "inception"]
    inputs: Literal["rgb", "all"]
    display: str
    pretrained: bool = False
    paper_name: str = ""
    paper_scores: dict[str, float] = field(default_factory=dict)
    demo_epochs: int = 15


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("inception-v3", "inception", "rgb", "Inception-v3 (frozen, FC head)",
                  pretrained=True, paper_name="Inception-v2",
                  paper_scores={"precision": 48.23, "recall": 56.79, "f1": 0.4988, "f2": 0.5301},
                  demo_epochs=2),
        ModelSpec("s-cnn-rgb", "s-cnn", "rgb", "S-CNN-RGB", paper_name="S-CNN-RGB",
                  paper_scores={"precision": 65.06, "recall": 75.57, "f1": 0.6759, "f2": 0.7139}),
        ModelSpec("s-cnn-all", "s-cnn", "all", "S-CNN-All", paper_name="S-CNN-All",
                  paper_scores={"precision": 69.93, "recall": 77.10, "f1": 0.7098, "f2": 0.7384}),
    )
}
"""All models, in the row order of the paper's Table 4."""

MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
"""The model names, in Table-4 order."""

MODEL_INPUTS: dict[str, str] = {name: spec.inputs for name, spec in MODELS.items()}
"""Which bands each model takes."""
