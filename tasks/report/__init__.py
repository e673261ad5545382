"""report: the pages people read. Enters: each model's metrics.json, per_class.json, train.json and
history.json. Leaves: reports/<key>/README.md + curves.png and a row in reports/summaries/
(report_page@), and the index reports/README.md with its tables and the transfer figure (report).
"""
