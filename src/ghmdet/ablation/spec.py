"""What an ablation sweep is: its table, its preset and the exact list of its jobs with their (stable) dirs.

The job list is expanded the way Hydra's basic sweeper expands it (``hydra.sweeper.params`` first, then the
command line, the last value of a key winning, the cartesian product of the sweeps). The sweep's callback
writes the result to ``<sweep dir>/ablation.json`` when the sweep starts, so that the tables can be rebuilt
later (``ghmdet-tables <sweep dir>``) without Hydra, even from a sweep that was killed.

Job dirs (``hydra.sweep.subdir``: resolver ``ghmdet.ablation_job_dir``, conf/ablation/sweep/default.yaml):

- a preset with ``ablation.preset_version`` (e.g. 1): ``<log dir>/ablation/<preset>-v<version>/jobs/<name>``,
  ``<name>`` being the job's losses and seed and a short hash of what the job computes (its resolved config
  without the keys of ``ablation.job_dir_ignore``: the ablation node, logger, paths, threads, skip/resume
  flags, ...). Two tables that run the same configuration (GHM-C M = 30 in ``bins``, ``cls_loss`` and
  ``reg_loss``) resolve it to one dir, so the second finds it completed and skips it; each table's sweep dir
  ``<preset>-v<version>/<table>`` holds its index, ``ablation.json``, with job dirs ``../jobs/<name>``.
  A new preset version starts a new tree, so tables never mix jobs of two versions.
- a preset without a version (treecrowns, coco): the job's ``hydra.job.override_dirname`` under
  ``<log dir>/ablation/<preset>/<table>``, the layout the committed tables were made from.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from ghmdet.files import write_text_atomic

SPEC_FILE = "ablation.json"
#: the ``hydra.sweep.subdir`` every ablation sweep uses (per-job dirs that do not change between reruns)
JOB_SUBDIR = "${ghmdet.ablation_job_dir:}"
SEED_KEY = "seed"
#: where a versioned preset's shared jobs live, relative to each table's sweep dir
SHARED_JOBS = "../jobs"
#: the default of ``ablation.job_dir_ignore``: config keys that do not change what a job computes
JOB_DIR_IGNORE = (
    "hydra", "ablation", "logger", "paths", "task_name", "threads", "skip_completed", "resume",
    "min_free_disk_mb",
)  # fmt: skip
#: the default of ``ablation.job_name_keys``: config keys whose values name a job dir (besides the losses)
JOB_NAME_KEYS = ("loss.cls.bins", "loss.cls.momentum", "loss.cls.density")
_HASH_CHARS = 8


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
    #: the row value that the paired bootstrap compares every row with (``ablation.reference``)
    reference: str | None = None
    #: bootstrap replicates and the seed of their generator (``ablation.n_boot``, ``ablation.bootstrap_seed``)
    n_boot: int = 1000
    bootstrap_seed: int = 0
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
        return write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")

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


def preset_dir(preset: str, version: Any) -> str:
    """``<preset>`` for a preset without a version, else ``<preset>-v<version>`` (resolver
    ``ghmdet.ablation_preset_dir``)."""
    if version is None:
        return str(preset)
    text = str(version)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", text):
        raise SpecError(f"ablation.preset_version must be letters, digits, '.', '_' or '-', got {version!r}")
    return f"{preset}-v{text}"


def _safe(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def result_config(config: DictConfig, ignore: Sequence[str] = JOB_DIR_IGNORE) -> dict[str, Any]:
    """What a job computes: its config resolved, without ``ignore``, paths kept as ``<paths.key>``.

    Interpolations into ``paths`` resolve to placeholders, so a data or log dir elsewhere (another machine,
    ``GHMDET_DATA_DIR``) does not change the result; the ``hydra`` node is never resolved (it holds the
    job dir being computed).
    """
    raw = OmegaConf.to_container(config, resolve=False)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    # ignored nodes go before resolving (the logger's run name reads the hydra node), paths after
    for key in ignore:
        if str(key) != "paths":
            _drop(raw, str(key))
    paths = raw.get("paths")
    if isinstance(paths, dict):
        raw["paths"] = {k: f"<paths.{k}>" for k in paths}
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    except Exception as err:  # an interpolation into the hydra node or an ignored key, a failing resolver
        raise SpecError(
            f"the job dir hash needs a config that resolves without the hydra node and "
            f"ablation.job_dir_ignore: {type(err).__name__}: {err}"
        ) from err
    assert isinstance(resolved, dict)
    if "paths" in ignore:
        resolved.pop("paths", None)
    return resolved


def config_hash(config: DictConfig, ignore: Sequence[str] = JOB_DIR_IGNORE) -> str:
    """A short hash of :func:`result_config` (stable across key order and processes)."""
    text = json.dumps(result_config(config, ignore), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def job_name(config: DictConfig) -> str:
    """A shared job's dir name: losses (cls with its named params), seed, then the result hash.

    E.g. ``ghmc-bins30-momentum0.75-densityunit_smooth_l1_seed0_1a2b3c4d``.
    """
    ablation = config.get("ablation") or {}
    ignore = list(ablation.get("job_dir_ignore") or JOB_DIR_IGNORE)
    name_keys = list(ablation.get("job_name_keys") or JOB_NAME_KEYS)
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    cls = [_safe(choices.get("loss/cls") or OmegaConf.select(config, "loss.cls._target_", default="cls"))]
    reg = _safe(choices.get("loss/reg") or OmegaConf.select(config, "loss.reg._target_", default="reg"))
    extra = []
    for key in name_keys:
        value = OmegaConf.select(config, key, default=None)
        if value is not None:
            part = f"{_safe(key.rsplit('.', 1)[-1])}{_safe(value)}"
            (cls if key.startswith("loss.cls.") else extra).append(part)
    seed = f"seed{_safe(config.get('seed'))}"
    return "_".join(["-".join(cls), reg, *extra, seed, config_hash(config, ignore)])


def job_subdir(config: DictConfig) -> str:
    """A job's ``hydra.sweep.subdir`` (resolver ``ghmdet.ablation_job_dir``): see the module docstring."""
    if OmegaConf.select(config, "ablation.preset_version", default=None) is None:
        return str(OmegaConf.select(config, "hydra.job.override_dirname"))
    return f"{SHARED_JOBS}/{job_name(config)}"


def _job_dir_resolver(*, _root_: DictConfig) -> str:
    return job_subdir(_root_)


OmegaConf.register_new_resolver("ghmdet.ablation_job_dir", _job_dir_resolver, replace=True)
OmegaConf.register_new_resolver("ghmdet.ablation_preset_dir", preset_dir, replace=True)


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


def _positive_int(ablation: dict[str, Any], key: str, default: int) -> int:
    value = ablation.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"ablation.{key} must be a positive integer, got {value!r}")
    return value


def _shared_job_dir(config: DictConfig, job: Job) -> str:
    """The dir Hydra will give ``job``: its ``hydra.sweep.subdir`` in the config the job gets."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        raise SpecError("a versioned preset's job dirs need Hydra's config loader (run as ghmdet-train -m)")
    job_config = GlobalHydra.instance().config_loader().load_sweep_config(config, list(job.overrides))
    return str(OmegaConf.select(job_config, "hydra.sweep.subdir"))


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
    if ablation.get("preset_version") is not None:
        jobs = [replace(job, dir=_shared_job_dir(config, job)) for job in jobs]
        dirs = [job.dir for job in jobs]
        if len(set(dirs)) != len(dirs):
            same = sorted({d for d in dirs if dirs.count(d) > 1})
            raise SpecError(f"jobs of this sweep compute the same thing (one dir): {same[:3]}")
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
        reference=None if ablation.get("reference") is None else str(ablation["reference"]),
        n_boot=_positive_int(ablation, "n_boot", 1000),
        bootstrap_seed=int(ablation.get("bootstrap_seed", 0)),
        same_scale_as_paper=bool(ablation.get("same_scale_as_paper", False)),
        data_description=str(ablation.get("data_description", "")),
        task_name=str(config.get("task_name", "")),
        command=_command(config),
        wandb=bool(ablation.get("wandb", True)),
        wandb_project=str(OmegaConf.select(config, "logger.wandb.project", default=None) or "ghmdet"),
        extra={k: v for k, v in ablation.items() if k not in known},
    )
