"""spark-submit entry point for ``bigearthnet import-v2`` (the reBEN folder archive to Parquet).

    spark-submit --master spark://host:7077 jobs/import_v2.py ARCHIVE_DIR --out DATASET_DIR \
        [--on-error fail|skip] [--config YAML]

The master comes from spark-submit; every flag is the CLI's.
"""

import sys

from bigearthnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["import-v2", *sys.argv[1:]]))
