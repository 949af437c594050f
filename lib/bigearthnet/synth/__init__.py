"""Seeded synthetic Sentinel-2 L2A + CORINE Land Cover 2018 world (tests and demo).

``synthesize(SynthConfig(...), out_dir)`` writes real-format products (SAFE/JP2 or COG/STAC)
on real tile grids, a CLC 2018 GeoPackage in EPSG:3035 and the ground truth; see
:mod:`bigearthnet.synth.world` for the layout and :mod:`bigearthnet.synth.spectra` for the
classes that are identical in RGB.
"""

from bigearthnet.synth.conditions import ProductConditions
from bigearthnet.synth.world import SynthConfig, resolve_products, synthesize, validate_config

__all__ = ["ProductConditions", "SynthConfig", "resolve_products", "synthesize", "validate_config"]
