"""The report stage: the self-contained HTML page, the ``analyze`` / ``report`` commands, and the demo.

Modules: ``page`` (write_report: stores -> report.html + summary.json), ``commands`` (the command lines),
``demo`` (the main job: pretrain, fine-tune, import a real model, report).
"""

from trajlab.report.page import find_stores, training_curves, write_report

__all__ = ["find_stores", "training_curves", "write_report"]
