"""The ABM report: numbers from the database, shown as an HTML page, a Prefect artifact
and JSON."""

from stages.report.data import MIN_SENT_PER_VARIANT, report_data, two_proportion_p_value
from stages.report.html_page import render_html
from stages.report.markdown import publish_artifact, report_markdown
from stages.report.text import verdict_text

__all__ = [
    "MIN_SENT_PER_VARIANT",
    "publish_artifact",
    "render_html",
    "report_data",
    "report_markdown",
    "two_proportion_p_value",
    "verdict_text",
]
