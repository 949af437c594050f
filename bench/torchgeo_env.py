"""The cached TorchGeo side environment: the judge of our reBEN and v1 exports
(``tests/interop/``) and the baseline of ``bench/interop.py``.

TorchGeo 0.8.1 (the newest release; it needs torch >= 2, torchvision >= 0.15.1, rasterio >=
1.4.3, which our pins meet) declares lightning, kornia, timm, segmentation-models-pytorch,
lightly, torchmetrics and jsonargparse as dependencies: a large tree its dataset classes do not
import. So it lives in its own venv (:mod:`side_env`) that sees our venv's packages (torch,
torchvision, rasterio, pandas, numpy, geopandas, shapely, pyproj, matplotlib, pillow: not
downloaded again) and adds only what ``import torchgeo.datasets`` needs beyond them: einops and
requests (with requests' own dependencies), pinned here, and torchgeo itself with ``--no-deps``.
"""

from __future__ import annotations

from pathlib import Path

from side_env import SideEnv, SideEnvUnavailable

TORCHGEO = "torchgeo==0.8.1"
PINS = (
    "einops==0.8.2",  # imported at module level by several torchgeo.datasets modules
    # requests is imported by a torchgeo.datasets module at import time; with its dependencies
    "requests==2.32.5", "urllib3==2.5.0", "idna==3.10", "certifi==2025.8.3",
    "charset-normalizer==3.4.3",
)
ENV = SideEnv("torchgeo-0.8.1", TORCHGEO, PINS, inherit=True)
TorchGeoUnavailable = SideEnvUnavailable
"""The venv cannot be built here (PyPI unreachable)."""


def torchgeo_python() -> Path:
    """The interpreter of the cached TorchGeo venv, built on first use.

    Raises:
        TorchGeoUnavailable: it is not built and PyPI cannot be reached.
    """
    return ENV.python()
