"""spark-submit entry point for ``bigearthnet export`` (a dataset to the reBEN or v1 folders).

    spark-submit --master spark://host:7077 jobs/export.py DATASET_DIR --format reben|v1 \
        --out DIR [--config YAML]

The master comes from spark-submit; every flag is the CLI's.
"""

import sys

from bigearthnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
