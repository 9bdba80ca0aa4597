"""What an ablation sweep is: its table, its preset and the exact list of its jobs with their (stable) dirs.

The job list is expanded the way Hydra's basic sweeper expands it (``hydra.sweeper.params`` first, then the
command line, the last value of a key winning, the cartesian product of the sweeps), and each job's dir is
its ``hydra.job.override_dirname``, as ``conf/ablation/sweep/default.yaml`` sets ``hydra.sweep.subdir``. The
sweep's callback writes the result to ``<sweep dir>/ablation.json`` when the sweep starts, so that the tables
can be rebuilt later (``ghmdet-tables <sweep dir>``) without Hydra, even from a sweep that was killed.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

SPEC_FILE = "ablation.json"
#: the ``hydra.sweep.subdir`` every ablation sweep uses (per-job dirs that do not change between reruns)
JOB_SUBDIR = "${hydra.job.override_dirname}"
SEED_KEY = "seed"


class SpecError(ValueError):
    """An ablation sweep cannot be described (config node missing, unstable job dirs, unreadable spec)."""


@dataclass(frozen=True)
class Job:
    """One job of a sweep: its dir (relative to the sweep dir), its overrides and their values by key."""

    dir: str
    overrides: tuple[str, ...]
    values: dict[str, str]


@dataclass
class AblationSpec:
    """Everything the aggregator needs to know about one sweep (saved as ``ablation.json``)."""

    table: str
    preset: str
    row: str
    metrics: list[str]
    sweep_dir: str
    out_dir: str
    jobs: list[Job]
    swept: list[str]
    relative_to: str | None = None
    same_scale_as_paper: bool = False
    data_description: str = ""
    task_name: str = ""
    command: str = ""
    wandb: bool = True
    wandb_project: str = "ghmdet"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group_keys(self) -> list[str]:
        """The keys that name a row: the table's row key first, then any other swept key but the seed."""
        return [self.row, *(k for k in self.swept if k not in (self.row, SEED_KEY))]

    def job_dir(self, job: Job) -> Path:
        return Path(self.sweep_dir) / job.dir

    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["jobs"] = [{**asdict(job), "overrides": list(job.overrides)} for job in self.jobs]
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> AblationSpec:
        data = dict(payload)
        data["jobs"] = [
            Job(dir=j["dir"], overrides=tuple(j["overrides"]), values=dict(j["values"])) for j in data["jobs"]
        ]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path | None = None) -> Path:
        """Write ``<sweep dir>/ablation.json`` (atomically)."""
        path = Path(path) if path is not None else Path(self.sweep_dir) / SPEC_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, sweep_dir: Path) -> AblationSpec:
        """Read ``<sweep dir>/ablation.json``; the error names the file and what is wrong with it."""
        path = Path(sweep_dir) / SPEC_FILE
        try:
            payload = json.loads(path.read_text())
            spec = cls.from_json(payload)
        except FileNotFoundError as err:
            raise SpecError(
                f"{path}: no such file; it is written when an ablation sweep starts "
                "(ghmdet-train -m +ablation=<table>); is this an ablation sweep dir?"
            ) from err
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise SpecError(f"{path}: not a readable ablation spec ({type(err).__name__}: {err})") from err
        # The sweep dir may have moved since (copied from a cluster): trust where the file is.
        spec.sweep_dir = str(Path(sweep_dir).resolve())
        return spec


def overrides_dirname(
    overrides: Sequence[Override], exclude_keys: Sequence[str], item_sep: str, kv_sep: str
) -> str:
    """A job's ``hydra.job.override_dirname`` (Hydra 1.3's rule: sorted ``key=value``, excluded keys out)."""
    lines = sorted(o.input_line for o in overrides if o.key_or_group not in exclude_keys and o.input_line)
    return re.sub("=", kv_sep, item_sep.join(lines))


def expand_jobs(
    params: dict[str, Any] | None,
    task_overrides: Sequence[str],
    exclude_keys: Sequence[str] = (),
    item_sep: str = ",",
    kv_sep: str = "=",
) -> tuple[list[Job], list[str]]:
    """The jobs of a basic-sweeper multirun and the swept keys, in the sweeper's order.

    ``params`` is ``hydra.sweeper.params``, ``task_overrides`` the command line's task overrides.
    """
    parser = OverridesParser.create()
    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(task_overrides)
    parsed = parser.parse_overrides(lines)
    last: OrderedDict[str, Override] = OrderedDict()
    for override in parsed:
        last[override.get_key_element()] = override
    swept = [o.key_or_group for o in last.values() if o.is_sweep_override()]
    jobs = []
    for job_overrides in BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]:
        job_parsed = [o for o in parser.parse_overrides(list(job_overrides)) if not o.is_hydra_override()]
        jobs.append(
            Job(
                dir=overrides_dirname(job_parsed, exclude_keys, item_sep, kv_sep),
                overrides=tuple(job_overrides),
                values={o.key_or_group: o.get_value_element_as_str() for o in job_parsed},
            )
        )
    return jobs, swept


def _command(config: DictConfig) -> str:
    hydra_overrides = [o for o in config.hydra.overrides.hydra if not str(o).startswith("hydra.mode=")]
    return " ".join(["ghmdet-train", "-m", *config.hydra.overrides.task, *hydra_overrides])


def spec_from_config(config: DictConfig) -> AblationSpec:
    """The spec of the multirun whose composed config (with its ``hydra`` node) is ``config``."""
    if OmegaConf.select(config, "ablation") is None:
        raise SpecError(
            "the config has no 'ablation' node: run an ablation sweep as ghmdet-train -m +ablation=<table>"
        )
    sweep_raw = OmegaConf.to_container(config.hydra.sweep, resolve=False)
    if sweep_raw.get("subdir") != JOB_SUBDIR:
        raise SpecError(
            f"hydra.sweep.subdir must be {JOB_SUBDIR} (stable job dirs, so that reruns skip and resume), "
            f"got {sweep_raw.get('subdir')!r}"
        )
    ablation = OmegaConf.to_container(config.ablation, resolve=True)
    for key in ("table", "preset", "row", "metrics", "out_dir"):
        if ablation.get(key) in (None, "???"):
            raise SpecError(f"ablation.{key} is not set (conf/ablation/<table>.yaml and the preset set it)")
    dirname_cfg = config.hydra.job.config.override_dirname
    params = config.hydra.sweeper.get("params")
    jobs, swept = expand_jobs(
        OmegaConf.to_container(params, resolve=True) if params else {},
        list(config.hydra.overrides.task),
        exclude_keys=list(dirname_cfg.exclude_keys),
        item_sep=dirname_cfg.item_sep,
        kv_sep=dirname_cfg.kv_sep,
    )
    known = {f.name for f in fields(AblationSpec)}
    return AblationSpec(
        table=str(ablation["table"]),
        preset=str(ablation["preset"]),
        row=str(ablation["row"]),
        metrics=[str(m) for m in ablation["metrics"]],
        sweep_dir=str(Path(str(config.hydra.sweep.dir)).resolve()),
        out_dir=str(ablation["out_dir"]),
        jobs=jobs,
        swept=swept,
        relative_to=None if ablation.get("relative_to") is None else str(ablation["relative_to"]),
        same_scale_as_paper=bool(ablation.get("same_scale_as_paper", False)),
        data_description=str(ablation.get("data_description", "")),
        task_name=str(config.get("task_name", "")),
        command=_command(config),
        wandb=bool(ablation.get("wandb", True)),
        wandb_project=str(OmegaConf.select(config, "logger.wandb.project", default=None) or "ghmdet"),
        extra={k: v for k, v in ablation.items() if k not in known},
    )
