"""spark-submit entry point for ``bigearthnet report`` (the Table-4 report of evaluated runs).

    spark-submit jobs/report.py RUN [RUN ...] --workdir W [--split test]

Every flag is the CLI's.
"""

import sys

from bigearthnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
