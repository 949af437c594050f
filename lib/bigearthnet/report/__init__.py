"""Reports: Markdown + JSON summary of evaluated runs (paper Table 4) and PNG plots."""

from bigearthnet.report.markdown import PAPER_TABLE4, write_report

__all__ = ["PAPER_TABLE4", "write_report"]
