"""Ablation tables: the jobs' ``metrics.json`` -> Markdown, CSV, LaTeX, a plot and W&B, the paper beside ours.

- :mod:`ghmdet.ablation.spec`: a sweep's table, preset and job list (``ablation.json``);
- :mod:`ghmdet.ablation.job_results`: one job's ``metrics.json`` -> status, reason, metric values;
- :mod:`ghmdet.ablation.aggregate`: runs -> rows (mean, std, paper, delta);
- :mod:`ghmdet.ablation.convergence`: whether a row had converged; :mod:`ghmdet.ablation.bootstrap`: the
  paired-bootstrap intervals against the reference row;
- :mod:`ghmdet.ablation.paper`: the paper's numbers (``paper_numbers.yaml``);
- :mod:`ghmdet.ablation.render`: the formats; :mod:`ghmdet.ablation.summary_plot`: the figure;
  :mod:`ghmdet.ablation.report`: files + W&B;
- :mod:`ghmdet.ablation.sweep_callback`: the Hydra callback of ``conf/ablation/*`` sweeps;
- :mod:`ghmdet.ablation.cli`: ``ghmdet-tables`` (console script).

See docs/ablation.md.
"""

from ghmdet.ablation.cli import main
from ghmdet.ablation.sweep_callback import AblationCallback

__all__ = ["AblationCallback", "main"]
