"""The three models of the BigEarthNet paper (section 4): S-CNN-RGB, S-CNN-All and Inception.

Every model returns **logits** of shape ``(batch, num_classes)`` from ``forward``. The paper's
sigmoid outputs are applied outside the model: in the loss (``nn.BCEWithLogitsLoss``, the
numerically stable "sigmoid cross entropy" of the paper) and at prediction time
(``torch.sigmoid``, see :func:`predict_proba`), after which a class is predicted when its
probability is ``>= 0.5`` (:mod:`bigearthnet.train.metrics`).

S-CNN (``SCNN``)
    The paper: "three convolutional layers with 32, 32 and 64 filters having 5x5, 5x5 and 3x3
    filter sizes [...] one fully connected (FC) layer and one classification layer [...] In all
    convolution operations, zero padding was used. We also applied max-pooling between layers."
    Our reading, for a 120x120 input::

        conv 5x5, 32, stride 1, zero padding 2 ('same')  -> ReLU -> max-pool 2x2/2   120 -> 60
        conv 5x5, 32, stride 1, zero padding 2 ('same')  -> ReLU -> max-pool 2x2/2    60 -> 30
        conv 3x3, 64, stride 1, zero padding 1 ('same')  -> ReLU -> max-pool 2x2/2    30 -> 15
        flatten (64 * 15 * 15 = 14,400) -> FC fc_width -> ReLU -> Linear num_classes (logits)

    * "Zero padding" is read as 'same' padding (the spatial size is only changed by pooling).
    * "Max-pooling between layers" is read as a 2x2, stride 2 max-pool after *every*
      convolution, the last one included (it sits between the last conv layer and the FC
      layer). Pooling only between conv layers would leave 64 * 30 * 30 = 57,600 inputs to the
      FC layer, 4x more FC weights than every other parameter together.
    * ``fc_width`` defaults to 128 (the paper gives no width). No dropout and no batch norm
      (the paper mentions neither). Weights use PyTorch's default initialisation (the paper:
      "randomly initialized", trained from scratch).
    * S-CNN-RGB takes 3 channels (B04, B03, B02); S-CNN-All takes all 12 bands at 10 m (the
      20 m and 60 m bands upsampled to 120x120 with cubic interpolation by the loader).
    * Parameter count: ``32(25 c + 1) + 32(25*32 + 1) + 64(9*32 + 1)
      + fc_width(14400 + 1) + num_classes(fc_width + 1)``, c = input channels.

Inception baseline (``InceptionBaseline``)
    The paper fine-tunes a frozen, ImageNet-pretrained Inception-v2 with "one FC and one
    classification layer" on top of "the feature vector extracted from the layer just before
    the softmax". torchvision has no Inception-v2; its ``inception_v3`` (Szegedy et al. 2016,
    the paper's reference [1], which describes both v2 and v3) is the closest maintained
    equivalent. We use:

    * the torchvision Inception-v3 with ``aux_logits=False``, its 1000-way ``fc`` replaced by
      ``nn.Identity`` so the backbone yields the 2048-d pooled feature vector;
    * a trained head ``Linear(2048, fc_width) -> ReLU -> Linear(fc_width, num_classes)``;
    * a frozen backbone: all its parameters have ``requires_grad = False``, it runs under
      ``torch.no_grad`` and always in eval mode (batch-norm running statistics and dropout are
      never updated, even after ``model.train()``; :meth:`InceptionBaseline.train` is
      overridden).

    **Input.** The model takes the same batch as S-CNN-RGB: 3 channels in R, G, B order
    (B04, B03, B02), each standardised with the dataset's per-band mean/std (z-scores), at
    any spatial size (120x120 in BigEarthNet). Inside ``forward`` the batch is resized to
    299x299 with bilinear interpolation (``align_corners=False``). The z-scores are then used
    *as if* they were ImageNet-normalised pixels: ImageNet normalisation ``(x - mean) / std``
    also yields roughly zero-mean, unit-variance channels, so the standardised reflectances
    fall in the value range the backbone was trained on, without the model having to know the
    dataset statistics. As torchvision does for these weights, ``transform_input=True``
    converts ImageNet-normalised input to the ``[-1, 1]`` scaling of the original Google
    checkpoint; we keep it on for every ``weights`` choice so a state_dict behaves the same
    whichever way it was loaded.

    **Weights** (``build_inception(weights=...)``):

    * ``"imagenet"``: torchvision's ``Inception_V3_Weights.IMAGENET1K_V1`` read **only** from
      the local torch hub cache (``$TORCH_HOME/hub/checkpoints/inception_v3_google-0cc3c7bd.pth``,
      see ``torch.hub.get_dir()``). Nothing is ever downloaded; a missing file raises
      :class:`~bigearthnet.errors.WeightsUnavailableError`.
    * a path: a state_dict file read with ``torch.load(weights_only=True)``: either the
      torchvision Inception-v3 state_dict (e.g. a copy of the hub file; its ``fc.*`` and
      ``AuxLogits.*`` entries are ignored) or a full ``InceptionBaseline`` state_dict
      (``backbone.*`` and ``head.*`` keys, loaded strictly).
    * ``None``: random initialisation (tests).

    ``model.weights_source`` records which one was used (``"random"``,
    ``"imagenet:<file>"`` or ``"file:<file>"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bigearthnet.constants import PATCH_SIZE_PX
from bigearthnet.errors import (
    ConfigError,
    ModelInputError,
    UnknownModelError,
    WeightsIncompatibleError,
    WeightsUnavailableError,
)
from bigearthnet.train.registry import MODEL_INPUTS, MODEL_NAMES, MODELS, ModelSpec

__all__ = [
    "DEFAULT_FC_WIDTH",
    "INCEPTION_FEATURES",
    "INCEPTION_INPUT_SIZE",
    "INPUT_CHANNELS",
    "MODEL_INPUTS",
    "MODEL_NAMES",
    "PATCH_SIZE_PX",
    "SCNN",
    "InceptionBaseline",
    "WeightsSpec",
    "build_inception",
    "build_model",
    "imagenet_cache_path",
    "predict_proba",
    "scnn_num_parameters",
]

WeightsSpec = str | os.PathLike[str] | None
"""``"imagenet"``, a path to a state_dict file, or ``None`` for random initialisation."""

DEFAULT_FC_WIDTH = 128
"""Width of the FC layer before the classification layer (the paper does not give it)."""

INCEPTION_INPUT_SIZE = 299
"""Input side of Inception-v3; patches are resized to it inside the model."""

INCEPTION_FEATURES = 2048
"""Size of Inception-v3's pooled feature vector (the layer before its classifier)."""

INPUT_CHANNELS: dict[str, int] = {"rgb": 3, "all": 12}
"""Number of input channels per input kind of :data:`MODEL_INPUTS`."""

_CONV_SPEC: tuple[tuple[int, int], ...] = ((32, 5), (32, 5), (64, 3))
"""(filters, kernel size) of the three S-CNN conv layers, from the paper."""


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------
# S-CNN


class SCNN(nn.Module):
    """The paper's shallow CNN (S-CNN-RGB with 3 channels, S-CNN-All with 12).

    Args:
        in_channels: number of input bands (3 for RGB, 12 for all bands).
        num_classes: number of labels (43 or 19).
        fc_width: width of the FC layer before the classification layer.
        input_size: side of the square input in pixels (120 for BigEarthNet); must be a
            multiple of 8 so that the three 2x2 poolings divide it exactly.

    Attributes:
        features: the three conv -> ReLU -> max-pool blocks.
        head: flatten -> FC -> ReLU -> classification layer (logits).
        weights_source: ``"random"`` or ``"file:<path>"``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        fc_width: int = DEFAULT_FC_WIDTH,
        input_size: int = PATCH_SIZE_PX,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("fc_width", fc_width),
            ("input_size", input_size),
        ):
            _check_positive(name, value)
        if input_size % 8:
            raise ConfigError(f"input_size must be a multiple of 8, got {input_size}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.fc_width = fc_width
        self.input_size = input_size
        layers: list[nn.Module] = []
        c = in_channels
        for filters, k in _CONV_SPEC:
            layers += [
                nn.Conv2d(
                    c, filters, kernel_size=k, stride=1, padding=k // 2, padding_mode="zeros"
                ),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ]
            c = filters
        self.features = nn.Sequential(*layers)
        side = input_size // 8
        self.flat_features = c * side * side
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.flat_features, fc_width),
            nn.ReLU(inplace=True),
            nn.Linear(fc_width, num_classes),
        )
        self.weights_source = "random"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute logits.

        Args:
            x: ``(batch, in_channels, input_size, input_size)`` standardised bands.

        Returns:
            ``(batch, num_classes)`` logits (apply ``torch.sigmoid`` for probabilities).

        Raises:
            ModelInputError: if the batch has the wrong number of dimensions, channels or size.
        """
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ModelInputError(
                f"S-CNN expects a batch of shape (N, {expected[0]}, {expected[1]}, "
                f"{expected[2]}), got {tuple(x.shape)}"
            )
        return self.head(self.features(x))


def scnn_num_parameters(
    in_channels: int,
    num_classes: int,
    fc_width: int = DEFAULT_FC_WIDTH,
    input_size: int = PATCH_SIZE_PX,
) -> int:
    """Closed-form number of trainable parameters of :class:`SCNN`.

    Args:
        in_channels: input bands.
        num_classes: labels.
        fc_width: FC width.
        input_size: input side in pixels.

    Returns:
        The parameter count (weights + biases).
    """
    total, c = 0, in_channels
    for filters, k in _CONV_SPEC:
        total += filters * (k * k * c + 1)
        c = filters
    flat = c * (input_size // 8) ** 2
    return total + fc_width * (flat + 1) + num_classes * (fc_width + 1)


# --------------------------------------------------------------------------------------------
# Inception


def imagenet_cache_path() -> Path:
    """Where torchvision keeps the ImageNet Inception-v3 weights in the local torch hub cache.

    Returns:
        ``torch.hub.get_dir()/checkpoints/inception_v3_google-0cc3c7bd.pth`` (may not exist).
    """
    from torchvision.models import Inception_V3_Weights

    url = Inception_V3_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


class InceptionBaseline(nn.Module):
    """Frozen Inception-v3 backbone + trained FC and classification layers.

    Build it with :func:`build_inception`, which also loads the weights.

    Args:
        num_classes: number of labels.
        fc_width: width of the FC layer of the head.
        init_backbone: randomly initialise the backbone (torchvision's truncated-normal init);
            ``False`` when weights are loaded right after.

    Attributes:
        backbone: torchvision ``Inception3`` with ``fc = nn.Identity()`` (2048-d output), frozen.
        head: ``Linear(2048, fc_width) -> ReLU -> Linear(fc_width, num_classes)``.
        weights_source: ``"random"``, ``"imagenet:<file>"`` or ``"file:<file>"``.
    """

    def __init__(
        self, num_classes: int, fc_width: int = DEFAULT_FC_WIDTH, init_backbone: bool = True
    ) -> None:
        super().__init__()
        from torchvision.models.inception import Inception3

        _check_positive("num_classes", num_classes)
        _check_positive("fc_width", fc_width)
        self.num_classes = num_classes
        self.fc_width = fc_width
        self.backbone = Inception3(
            num_classes=1000, aux_logits=False, transform_input=True, init_weights=init_backbone
        )
        self.backbone.fc = nn.Identity()
        self.head = nn.Sequential(
            nn.Linear(INCEPTION_FEATURES, fc_width),
            nn.ReLU(inplace=True),
            nn.Linear(fc_width, num_classes),
        )
        self.weights_source = "random"
        self.freeze_backbone()

    def freeze_backbone(self) -> None:
        """Stop gradients and statistic updates in the backbone (done at construction)."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> InceptionBaseline:
        """Set the head's mode; the backbone stays in eval mode (frozen BN and dropout).

        Args:
            mode: ``True`` for training mode, ``False`` for evaluation.

        Returns:
            ``self``.
        """
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute logits.

        Args:
            x: ``(batch, 3, H, W)`` standardised R, G, B bands (B04, B03, B02); any ``H, W``,
                resized to 299x299 (bilinear) here.

        Returns:
            ``(batch, num_classes)`` logits.

        Raises:
            ModelInputError: if the batch is not 4-D with 3 channels.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ModelInputError(
                f"the Inception baseline expects a batch of shape (N, 3, H, W) in R, G, B order, "
                f"got {tuple(x.shape)}"
            )
        if tuple(x.shape[2:]) != (INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE):
            x = F.interpolate(
                x,
                size=(INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE),
                mode="bilinear",
                align_corners=False,
            )
        frozen = not any(p.requires_grad for p in self.backbone.parameters())
        with torch.no_grad() if frozen else nullcontext():
            features = self.backbone(x)
        return self.head(features)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise WeightsIncompatibleError(
            f"{path} is not a readable state_dict file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise WeightsIncompatibleError(
            f"{path} does not hold a state_dict (a mapping of names to tensors)"
        )
    return dict(state)


def _load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, what: str
) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsIncompatibleError(f"{path} does not fit {what}: {exc}") from exc


def _load_inception_file(model: InceptionBaseline, path: Path) -> None:
    state = _read_state_dict(path)
    if state and all(k.startswith(("backbone.", "head.")) for k in state):
        _load_strict(model, state, path, "the Inception baseline (backbone + head)")
        return
    backbone_state = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
    _load_strict(model.backbone, backbone_state, path, "torchvision's Inception-v3")


def build_inception(
    num_classes: int, weights: WeightsSpec = "imagenet", fc_width: int = DEFAULT_FC_WIDTH
) -> InceptionBaseline:
    """Build the frozen Inception baseline and load its weights without any download.

    Args:
        num_classes: number of labels.
        weights: ``"imagenet"`` (torch hub cache only), a path to a state_dict file, or
            ``None`` for a random backbone.
        fc_width: width of the head's FC layer.

    Returns:
        The model, in training mode (backbone in eval mode), with ``weights_source`` set.

    Raises:
        WeightsUnavailableError: ``"imagenet"`` is not in the local cache, or the file does not
            exist.
        WeightsIncompatibleError: the file is not an Inception-v3 state_dict.
    """
    if weights is None:
        return InceptionBaseline(num_classes, fc_width, init_backbone=True)
    model = InceptionBaseline(num_classes, fc_width, init_backbone=False)
    if isinstance(weights, str) and weights == "imagenet":
        path = imagenet_cache_path()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"ImageNet weights for Inception-v3 are not in the local torch hub cache "
                f"(expected {path}) and are never downloaded. Pass --weights FILE with a "
                f"torchvision Inception-v3 state_dict, or copy {path.name} into {path.parent} "
                f"(set TORCH_HOME to use another cache)."
            )
        _load_inception_file(model, path)
        model.weights_source = f"imagenet:{path}"
    else:
        path = Path(weights)
        _load_inception_file(model, path)
        model.weights_source = f"file:{path}"
    model.freeze_backbone()
    return model


# --------------------------------------------------------------------------------------------
# entry point


def build_model(
    name: str, num_classes: int, weights: WeightsSpec = None, fc_width: int = DEFAULT_FC_WIDTH
) -> nn.Module:
    """Build one of the paper's models by name.

    Args:
        name: ``"s-cnn-rgb"``, ``"s-cnn-all"`` or ``"inception-v3"`` (case-insensitive); see
            :data:`MODEL_INPUTS` for the bands each one takes.
        num_classes: number of labels.
        weights: ``None`` (random init), ``"imagenet"`` (Inception only, local cache only) or a
            path to a state_dict file (for S-CNN: a full ``SCNN`` state_dict).
        fc_width: width of the FC layer before the classification layer.

    Returns:
        The model (logits out).

    Raises:
        UnknownModelError: for any other name.
        ConfigError: ``weights="imagenet"`` for an S-CNN (they are trained from scratch).
        WeightsUnavailableError: weights that are not available locally.
        WeightsIncompatibleError: a weights file that does not fit the model.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    spec = MODELS[key]
    return BUILDERS[spec.family](spec, num_classes, weights, fc_width)


def _build_scnn(spec: ModelSpec, num_classes: int, weights: WeightsSpec,
                fc_width: int) -> nn.Module:
    """An S-CNN on the spec's bands, random or from a state_dict file."""
    key = spec.name
    model = SCNN(INPUT_CHANNELS[spec.inputs], num_classes, fc_width=fc_width)
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "imagenet":
        raise ConfigError(
            f"{key} has no ImageNet weights (the paper trains it from scratch); "
            f"pass weights=None or a state_dict file"
        )
    path = Path(weights)
    _load_strict(model, _read_state_dict(path), path, key)
    model.weights_source = f"file:{path}"
    return model


def _build_inception(spec: ModelSpec, num_classes: int, weights: WeightsSpec,
                     fc_width: int) -> nn.Module:
    return build_inception(num_classes, weights=weights, fc_width=fc_width)


BUILDERS: dict[str, Callable[[ModelSpec, int, WeightsSpec, int], nn.Module]] = {
    "s-cnn": _build_scnn,
    "inception": _build_inception,
}
"""Model builder per :attr:`ModelSpec.family`."""


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``sigmoid(model(x))`` in eval mode, without gradients.

    The model's previous train/eval mode is restored afterwards.

    Args:
        model: any model of this module.
        x: an input batch.

    Returns:
        ``(batch, num_classes)`` probabilities in ``[0, 1]``.
    """
    was_training = model.training
    model.eval()
    try:
        return torch.sigmoid(model(x))
    finally:
        model.train(was_training)
