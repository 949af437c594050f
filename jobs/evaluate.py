"""spark-submit entry point for ``bigearthnet evaluate`` (metrics, predictions and figures).

    spark-submit jobs/evaluate.py --run RUN [--split test]

Evaluation runs in the driver process (one model on one split); every flag is the CLI's.
"""

import sys

from bigearthnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
