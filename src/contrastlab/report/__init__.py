"""The self-contained HTML report of one or several evaluated runs."""

from contrastlab.report.html import build_report, load_evaluated, write_report

__all__ = ["build_report", "load_evaluated", "write_report"]
