"""bigearthnet: build, load and train on BigEarthNet-style Sentinel-2 multi-label archives."""

__version__ = "0.1.0"
