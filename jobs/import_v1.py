"""spark-submit entry point for ``bigearthnet import-v1`` (the v1 folder archive to Parquet).

    spark-submit --master spark://host:7077 jobs/import_v1.py ARCHIVE_DIR --out DATASET_DIR \
        [--on-error fail|skip] [--splits-dir DIR] [--exclude-lists CSV ...] [--config YAML]

The master comes from spark-submit; every flag is the CLI's.
"""

import sys

from bigearthnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["import-v1", *sys.argv[1:]]))
