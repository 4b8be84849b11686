"""`deepnet report`: everything known about a run on one self-contained HTML page
(``RUN/report.html``): images embedded as data URIs, no scripts, no external CSS or fonts,
readable on a laptop and printable. Reads only the files in the run directory."""

from deepnet.report._page import SECTIONS, build_report, render_report

__all__ = ["SECTIONS", "build_report", "render_report"]
