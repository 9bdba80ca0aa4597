"""``ghmdet-tables``: rebuild the ablation tables from sweep dirs (what the sweeps run at their end)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ghmdet.ablation.paper import PaperNumbersError, load_paper_numbers
from ghmdet.ablation.spec import SPEC_FILE, AblationSpec, SpecError
from ghmdet.paths import PROJECT_ROOT

log = logging.getLogger("ghmdet.ablation")


def default_log_dir() -> Path:
    """Where ``ghmdet-train`` writes (``paths.log_dir``): ``$GHMDET_LOG_DIR`` or ``<project>/outputs``."""
    return Path(os.environ.get("GHMDET_LOG_DIR", PROJECT_ROOT / "outputs"))


def find_sweeps(root: Path) -> list[Path]:
    """Every ablation sweep dir (holding ``ablation.json``) under ``<root>/ablation/<preset>/<table>``
    (``<preset>-v<version>/<table>`` for a versioned preset)."""
    return sorted(p.parent for p in (Path(root) / "ablation").glob(f"*/*/{SPEC_FILE}"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghmdet-tables",
        description=(
            "Aggregate ablation sweeps (ghmdet-train -m +ablation=<table>) into Markdown, CSV and LaTeX "
            "tables with the paper's numbers beside ours, a summary plot and a W&B run (job type 'ablation')."
        ),
    )
    parser.add_argument(
        "sweep_dirs",
        nargs="*",
        type=Path,
        help="sweep dirs holding ablation.json (default: every sweep under $GHMDET_LOG_DIR/ablation, "
        "i.e. outputs/ablation/<preset>/<table>)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="write <out-dir>/<table>/<preset>.* instead of where the sweep said (experiments/<table>/)",
    )
    parser.add_argument("--no-wandb", action="store_true", help="do not log the tables to W&B")
    parser.add_argument(
        "--n-boot",
        type=int,
        default=None,
        help="bootstrap replicates of the reference-row intervals (default: the sweep's ablation.n_boot)",
    )
    parser.add_argument(
        "--paper-numbers",
        type=Path,
        default=None,
        help="another paper_numbers.yaml (default: the packaged one)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Write the tables of each sweep dir; exit status 1 when a sweep could not be read, 0 otherwise."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        paper_numbers = load_paper_numbers(args.paper_numbers)
    except PaperNumbersError as err:
        print(f"ghmdet-tables: error: {err}", file=sys.stderr)
        return 1
    sweeps = list(args.sweep_dirs) or find_sweeps(default_log_dir())
    if not sweeps:
        print(
            f"ghmdet-tables: error: no ablation sweeps under {default_log_dir() / 'ablation'} "
            "(run make ablation, or give sweep dirs)",
            file=sys.stderr,
        )
        return 1
    from ghmdet.ablation.report import write_report

    status = 0
    for sweep in sweeps:
        try:
            spec = AblationSpec.load(sweep)
            if args.n_boot is not None:
                if args.n_boot < 1:
                    raise ValueError(f"--n-boot must be a positive integer, got {args.n_boot}")
                spec.n_boot = args.n_boot
            out = args.out_dir / spec.table if args.out_dir is not None else None
            report = write_report(spec, out, paper_numbers, use_wandb=False if args.no_wandb else None)
        except (SpecError, ValueError) as err:
            print(f"ghmdet-tables: error: {err}", file=sys.stderr)
            status = 1
            continue
        counts: dict[str, int] = {}
        for run in report.table.runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        print(
            f"{spec.table} ({spec.preset}): {report.markdown} "
            f"[{', '.join(f'{n} {s}' for s, n in counts.items())}]"
            + (f", W&B run {report.wandb_run}" if report.wandb_run else "")
        )
    return status
