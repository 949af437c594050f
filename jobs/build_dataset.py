"""spark-submit entry point for the archive build.

    spark-submit --master spark://host:7077 jobs/build_dataset.py \
        --products DIR --clc GPKG --out DATASET_DIR [--config YAML]

The master comes from spark-submit; everything else is ``bigearthnet build``.
"""

import sys

from bigearthnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
