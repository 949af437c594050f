"""spark-submit entry point for ``bigearthnet train`` through TorchDistributor.

    spark-submit --master spark://host:7077 jobs/train.py --dataset DS --model s-cnn-all \
        --out RUN --nproc 2 [--config conf/paper.yaml] [--resume]

Training runs as ``--nproc`` barrier tasks on the cluster's executors (``--spark`` is implied);
the master comes from spark-submit; every other flag is the CLI's.
"""

import sys

from bigearthnet.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(["train", *args] if "--spark" in args else ["train", "--spark", *args]))
