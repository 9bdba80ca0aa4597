"""Ablation tables: the jobs' ``metrics.json`` -> Markdown, CSV, LaTeX, a plot and W&B, the paper beside ours.

- :mod:`ghmdet.tables.spec`: a sweep's table, preset and job list (``ablation.json``);
- :mod:`ghmdet.tables.aggregate`: runs -> rows (mean, std, paper, delta);
- :mod:`ghmdet.tables.render`: the formats; :mod:`ghmdet.tables.report`: files + W&B;
- :mod:`ghmdet.tables.callback`: the Hydra callback of ``conf/ablation/*`` sweeps;
- :mod:`ghmdet.tables.cli`: ``ghmdet-tables`` (console script).

See docs/ablation.md.
"""

from ghmdet.tables.callback import AblationCallback
from ghmdet.tables.cli import main

__all__ = ["AblationCallback", "main"]
