"""Self-contained HTML reports (the ``harmonia demo`` report) and the figures in them.

It renders results and trains or measures nothing: the demo's experiment (train a baseline
and a harmonized model, then measure both) is the study of :mod:`harmonia.experiments.comparison`.

- :mod:`harmonia.report.sections`: the report's typed sections (what each one shows);
- :mod:`harmonia.report.figures`: matplotlib figures (Agg) rendered to PNG bytes;
- :mod:`harmonia.report.html`: the HTML page, figures embedded as base64 data URIs.

Example:
    >>> from harmonia.report.html import png_data_uri
    >>> png_data_uri(b"\\x89PNG")[:22]
    'data:image/png;base64,'
"""

from harmonia.report.html import png_data_uri, render_demo_report, write_html

__all__ = ["png_data_uri", "render_demo_report", "write_html"]
