"""Tests for bigearthnet.train.models (S-CNN and the frozen Inception baseline), CPU only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bigearthnet.errors import (
    BigEarthNetError,
    ConfigError,
    ModelInputError,
    UnknownModelError,
    WeightsIncompatibleError,
    WeightsUnavailableError,
)
from bigearthnet.train import models as mm

NUM_CLASSES = 19


@pytest.fixture(autouse=True)
def _no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything tries to fetch weights from the network."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# --------------------------------------------------------------------------------------------
# S-CNN


@pytest.mark.parametrize(("name", "channels"), [("s-cnn-rgb", 3), ("s-cnn-all", 12)])
def test_scnn_output_shape(name: str, channels: int) -> None:
    torch.manual_seed(0)
    model = mm.build_model(name, NUM_CLASSES)
    assert isinstance(model, mm.SCNN)
    assert model.in_channels == channels == mm.INPUT_CHANNELS[mm.MODEL_INPUTS[name]]
    out = model(torch.randn(4, channels, 120, 120))
    assert out.shape == (4, NUM_CLASSES)
    assert out.dtype == torch.float32
    # logits, not probabilities: a random net gives values outside [0, 1]
    assert (out < 0).any()


def test_scnn_exact_structure() -> None:
    model = mm.SCNN(in_channels=12, num_classes=43)
    layers = list(model.features)
    assert [type(m) for m in layers] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 3
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [c.in_channels for c in convs] == [12, 32, 32]
    assert [c.out_channels for c in convs] == [32, 32, 64]
    assert [c.kernel_size for c in convs] == [(5, 5), (5, 5), (3, 3)]
    assert [c.padding for c in convs] == [(2, 2), (2, 2), (1, 1)]
    assert [c.stride for c in convs] == [(1, 1)] * 3
    assert [c.dilation for c in convs] == [(1, 1)] * 3
    assert all(c.padding_mode == "zeros" and c.bias is not None for c in convs)
    pools = [m for m in layers if isinstance(m, nn.MaxPool2d)]
    assert all(p.kernel_size == 2 and p.stride == 2 and p.padding == 0 for p in pools)
    head = list(model.head)
    assert [type(m) for m in head] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert (head[1].in_features, head[1].out_features) == (64 * 15 * 15, 128)
    assert (head[3].in_features, head[3].out_features) == (128, 43)
    assert model.fc_width == mm.DEFAULT_FC_WIDTH == 128
    # no hidden extras (dropout, batch norm, sigmoid)
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm2d, nn.Sigmoid)) for m in model.modules())


def test_scnn_same_padding_and_pooling_sizes() -> None:
    model = mm.SCNN(in_channels=3, num_classes=5)
    x = torch.randn(1, 3, 120, 120)
    sizes = []
    for layer in model.features:
        x = layer(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [
        (32, 120, 120),
        (32, 120, 120),
        (32, 60, 60),
        (32, 60, 60),
        (32, 60, 60),
        (32, 30, 30),
        (64, 30, 30),
        (64, 30, 30),
        (64, 15, 15),
    ]


@pytest.mark.parametrize(
    ("channels", "classes", "width", "expected"),
    [
        # 32*(25*12+1) + 32*(25*32+1) + 64*(9*32+1) + 128*(14400+1) + 43*(128+1)
        (12, 43, 128, 9632 + 25632 + 18496 + 1843328 + 5547),
        (3, 19, 128, 2432 + 25632 + 18496 + 1843328 + 2451),
        (12, 19, 64, 9632 + 25632 + 18496 + 921664 + 1235),
    ],
)
def test_scnn_parameter_count(channels: int, classes: int, width: int, expected: int) -> None:
    model = mm.SCNN(channels, classes, fc_width=width)
    n = sum(p.numel() for p in model.parameters())
    assert n == expected
    assert mm.scnn_num_parameters(channels, classes, width) == expected
    assert all(p.requires_grad for p in model.parameters())


def test_scnn_rejects_wrong_input() -> None:
    model = mm.SCNN(3, 5)
    for shape in [(2, 12, 120, 120), (2, 3, 60, 60), (3, 120, 120)]:
        with pytest.raises(ModelInputError):
            model(torch.randn(*shape))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 0, "num_classes": 5},
        {"in_channels": 3, "num_classes": 0},
        {"in_channels": 3, "num_classes": 5, "fc_width": -1},
        {"in_channels": 3, "num_classes": 5, "input_size": 100},
    ],
)
def test_scnn_rejects_bad_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        mm.SCNN(**kwargs)


def test_scnn_trains() -> None:
    """A few SGD steps with BCEWithLogits on one fixed batch reduce the loss."""
    torch.manual_seed(0)
    model = mm.build_model("s-cnn-rgb", 4)
    x = torch.randn(4, 3, 120, 120)
    y = (torch.rand(4, 4) < 0.5).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


# --------------------------------------------------------------------------------------------
# build_model and weights for S-CNN


def test_model_inputs_table() -> None:
    assert mm.MODEL_INPUTS == {"s-cnn-rgb": "rgb", "s-cnn-all": "all", "inception-v3": "rgb"}
    assert mm.MODEL_NAMES == ("inception-v3", "s-cnn-rgb", "s-cnn-all")  # Table 4 order


@pytest.mark.parametrize("name", ["vgg16", "s-cnn", "", "inception-v2"])
def test_unknown_model_name(name: str) -> None:
    with pytest.raises(UnknownModelError, match="s-cnn-rgb") as info:
        mm.build_model(name, 5)
    assert isinstance(info.value, BigEarthNetError) and isinstance(info.value, ValueError)


def test_build_model_is_case_insensitive() -> None:
    assert mm.build_model("S-CNN-All", 5).in_channels == 12


def test_scnn_state_dict_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = mm.build_model("s-cnn-all", 7)
    path = tmp_path / "scnn.pt"
    torch.save(src.state_dict(), path)
    torch.manual_seed(2)
    model = mm.build_model("s-cnn-all", 7, weights=path)
    assert model.weights_source == f"file:{path}"
    for (k, a), (k2, b) in zip(src.state_dict().items(), model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(2, 12, 120, 120)
    assert torch.equal(src(x), model(x))
    # str paths work too
    assert mm.build_model("s-cnn-all", 7, weights=str(path)).weights_source == f"file:{path}"
    assert mm.build_model("s-cnn-all", 7).weights_source == "random"


def test_scnn_weights_errors(tmp_path: Path) -> None:
    torch.save(mm.SCNN(3, 7).state_dict(), tmp_path / "rgb.pt")
    with pytest.raises(WeightsIncompatibleError):  # 3-channel weights into S-CNN-All
        mm.build_model("s-cnn-all", 7, weights=tmp_path / "rgb.pt")
    with pytest.raises(WeightsIncompatibleError):  # wrong number of classes
        mm.build_model("s-cnn-rgb", 8, weights=tmp_path / "rgb.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsIncompatibleError):
        mm.build_model("s-cnn-rgb", 7, weights=tmp_path / "junk.pt")
    torch.save({"epoch": torch.tensor(3), "nested": {"a": 1}}, tmp_path / "ckpt.pt")
    with pytest.raises(WeightsIncompatibleError):
        mm.build_model("s-cnn-rgb", 7, weights=tmp_path / "ckpt.pt")
    with pytest.raises(WeightsUnavailableError) as info:
        mm.build_model("s-cnn-rgb", 7, weights=tmp_path / "missing.pt")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ConfigError, match="from scratch"):
        mm.build_model("s-cnn-rgb", 7, weights="imagenet")


def test_predict_proba_restores_mode() -> None:
    model = mm.SCNN(3, 5).train()
    p = mm.predict_proba(model, torch.randn(2, 3, 120, 120))
    assert p.shape == (2, 5) and bool(((p >= 0) & (p <= 1)).all())
    assert not p.requires_grad
    assert model.training


# --------------------------------------------------------------------------------------------
# Inception baseline


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state_dict laid out exactly like torchvision's ImageNet file (with fc and AuxLogits)."""
    from torchvision.models.inception import Inception3

    torch.manual_seed(123)
    ref = Inception3(num_classes=1000, aux_logits=True, init_weights=True)
    with torch.no_grad():  # make BN statistics distinguishable from a fresh init
        for name, buf in ref.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("weights") / "inception_v3_google-0cc3c7bd.pth"
    torch.save(ref.state_dict(), path)
    return path


def _frozen_state(model: mm.InceptionBaseline) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


def test_inception_structure_and_forward() -> None:
    torch.manual_seed(0)
    model = mm.build_model("inception-v3", NUM_CLASSES, weights=None)
    assert isinstance(model, mm.InceptionBaseline)
    assert model.weights_source == "random"
    bb = model.backbone
    assert bb.aux_logits is False and bb.AuxLogits is None
    assert bb.transform_input is True
    assert isinstance(bb.fc, nn.Identity)
    head = list(model.head)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features) == (2048, 128)
    assert (head[2].in_features, head[2].out_features) == (128, NUM_CLASSES)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"}

    seen: list[tuple[int, ...]] = []
    hook = bb.Conv2d_1a_3x3.register_forward_hook(
        lambda mod, inp, out: seen.append(tuple(inp[0].shape))
    )
    x = torch.randn(2, 3, 120, 120)
    out = model(x)
    hook.remove()
    assert out.shape == (2, NUM_CLASSES)
    assert seen == [(2, 3, 299, 299)]  # resized inside the model
    # the resize is bilinear, align_corners=False
    with torch.no_grad():
        ref = model.head(
            bb(F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
        )
    torch.testing.assert_close(out.detach(), ref)
    with pytest.raises(ModelInputError):
        model(torch.randn(2, 12, 120, 120))


def test_inception_backbone_stays_frozen() -> None:
    torch.manual_seed(0)
    model = mm.build_inception(5, weights=None)
    model.train()
    assert model.training and model.head.training
    assert not any(m.training for m in model.backbone.modules())
    before = _frozen_state(model)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x = torch.randn(2, 3, 120, 120)
    y = torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 1]])
    loss = nn.BCEWithLogitsLoss()(model(x), y)
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())
    opt.step()

    after = model.backbone.state_dict()
    for k, v in before.items():  # weights *and* BN running statistics unchanged
        assert torch.equal(v, after[k]), k
    changed = [not torch.equal(v, model.head.state_dict()[k]) for k, v in head_before.items()]
    assert all(changed)
    model.eval()
    assert not model.training and not model.head.training


def test_inception_imagenet_missing_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    expected = tmp_path / "hub" / "checkpoints" / "inception_v3_google-0cc3c7bd.pth"
    assert mm.imagenet_cache_path() == expected
    with pytest.raises(WeightsUnavailableError, match="--weights FILE") as info:
        mm.build_model("inception-v3", 5, weights="imagenet")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, BigEarthNetError)
    assert str(expected) in str(info.value)
    assert not expected.exists()  # nothing was fetched


def test_inception_imagenet_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inception_file: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / inception_file.name).symlink_to(inception_file)
    model = mm.build_inception(5, weights="imagenet")
    assert model.weights_source == f"imagenet:{cache / inception_file.name}"
    ref = torch.load(inception_file, weights_only=True)
    got = model.backbone.state_dict()
    for k, v in got.items():
        assert torch.equal(v, ref[k]), k
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_inception_state_dict_files(tmp_path: Path, inception_file: Path) -> None:
    # torchvision layout (fc and AuxLogits are ignored)
    model = mm.build_model("inception-v3", 5, weights=inception_file)
    assert model.weights_source == f"file:{inception_file}"
    ref = torch.load(inception_file, weights_only=True)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, ref[k]), k
    # full-model layout (backbone + head), e.g. after training
    with torch.no_grad():
        model.head[2].bias.fill_(0.25)
    full = tmp_path / "baseline.pt"
    torch.save(model.state_dict(), full)
    again = mm.build_model("inception-v3", 5, weights=full)
    assert torch.equal(again.head[2].bias, torch.full((5,), 0.25))
    x = torch.randn(1, 3, 120, 120)
    torch.testing.assert_close(again(x), model(x))
    # wrong architecture
    torch.save(mm.SCNN(3, 5).state_dict(), tmp_path / "scnn.pt")
    with pytest.raises(WeightsIncompatibleError):
        mm.build_model("inception-v3", 5, weights=tmp_path / "scnn.pt")
    with pytest.raises(WeightsIncompatibleError):  # head for 5 classes into a 6-class model
        mm.build_model("inception-v3", 6, weights=full)
    with pytest.raises(WeightsUnavailableError):
        mm.build_model("inception-v3", 5, weights=tmp_path / "missing.pt")
