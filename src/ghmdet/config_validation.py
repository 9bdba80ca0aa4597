"""Start-up validation of a composed config: every problem on one line, before any data loads.

:func:`validate_config` runs first in :func:`ghmdet.train.run`. It does not restate the rules the code already
enforces: the loss modules are instantiated (cheap, no data) so that *their* argument checks
(:mod:`ghmdet.losses._validation`) fire, the model's arguments go through the model's own check
(:func:`ghmdet.model.retinanet_arg_problems`, no weights built), the optimizer is built on a dummy parameter
so that torch's checks fire, the schedule is built and stepped through a run, the data module is constructed
(its ``__init__`` checks its arguments, no I/O) and the augmentation is built. What no constructor checks
(a learning rate of 0, a training budget with neither ``max_steps`` nor ``max_epochs``, an out-of-range
seed) is checked here. Each problem becomes
``<config key> = <value>: <reason>``; all of them are joined into one line of a :class:`ConfigError`.

Unknown choices of a config group (``loss/cls=ghm``) fail earlier, in Hydra's composition, and an override
that does not parse (``loss/cls.bins=10``) earlier still; the entry point turns those errors into one line as
well (:func:`ghmdet.cli.error_line`), the parse error with the valid form (:func:`override_parse_problem`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.errors import InstantiationException, OverrideParseException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

#: Largest seed ``lightning.seed_everything`` accepts (it silently draws a random one beyond).
MAX_SEED = 2**32 - 1
METRIC_BACKENDS = ("faster_coco_eval", "pycocotools")
_ARGUMENT_IN_MESSAGE = re.compile(r"^(?:\w+: )?(\w+) must\b")
_UNEXPECTED_KEYWORD = re.compile(r"unexpected keyword argument '(\w+)'")
OVERRIDE_GRAMMAR_URL = "https://hydra.cc/docs/advanced/override_grammar/basic/"
# A key addressing a value inside a config group with a slash: "loss/cls.bins".
_SLASH_BEFORE_DOT = re.compile(r"^([+~]*)([\w-]+(?:/[\w-]+)+)\.([\w.-]+)$")


class ConfigError(ValueError):
    """An invalid configuration; the message is one line naming each offending key and value."""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Problems:
    """Collects ``key = value: reason`` entries."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, value: Any, reason: str) -> None:
        self.items.append(f"{key} = {_short(value)}: {_one_line(reason)}")

    def add_raw(self, text: str) -> None:
        self.items.append(_one_line(text))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(node: Any, key: str, problems: _Problems) -> Any:
    """The resolved plain value of a config node (interpolations resolved), or None with a problem noted."""
    try:
        if isinstance(node, DictConfig) or OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
        return node
    except OmegaConfBaseException as err:
        problems.add_raw(f"{key}: {err}")
        return None


def _group(cfg: DictConfig, key: str, choose: str, problems: _Problems) -> Mapping[str, Any] | None:
    """The plain mapping of config group ``key``, or None with "missing (choose ...)" noted."""
    group = _plain(cfg.get(key), key, problems)
    if not isinstance(group, Mapping):
        problems.add_raw(f"{key}: missing (choose {choose})")
        return None
    return group


def _instantiate_into(
    problems: _Problems, key: str, node: Any, build: Callable[[Any], Any] | None = None
) -> Any:
    """Instantiate ``node`` (then ``build`` it); a constructor error names the key of the argument."""
    group = _plain(node, key, problems)
    if group is None:
        return None
    try:
        obj = instantiate(node)
        return build(obj) if build is not None else obj
    except InstantiationException as err:
        cause = err.__cause__ or err
    except (ValueError, TypeError) as err:
        cause = err
    message = str(cause)
    target = group.get("_target_", "?") if isinstance(group, Mapping) else "?"
    argument = _ARGUMENT_IN_MESSAGE.match(message) or _UNEXPECTED_KEYWORD.search(message)
    if argument and isinstance(group, Mapping):
        name = argument.group(1)
        if _UNEXPECTED_KEYWORD.search(message):
            problems.add(f"{key}.{name}", group.get(name), f"not a parameter of {target}")
        else:
            problems.add(f"{key}.{name}", group.get(name), message)
    else:
        problems.add_raw(f"{key} ({target}): {type(cause).__name__}: {message}")
    return None


def _check_losses(cfg: DictConfig, problems: _Problems) -> None:
    loss = cfg.get("loss")
    if loss is None:
        problems.add_raw("loss: missing (choose loss/cls and loss/reg)")
        return
    for part in ("cls", "reg"):
        if loss.get(part) is None:
            problems.add_raw(f"loss.{part}: missing (choose one with loss/{part}=...)")
        else:
            _instantiate_into(problems, f"loss.{part}", loss[part])


def _check_optimizer(cfg: DictConfig, problems: _Problems) -> None:
    node = cfg.get("optimizer")
    optimizer = _group(cfg, "optimizer", "optimizer=sgd or optimizer=adamw", problems)
    if optimizer is None:
        return
    before = len(problems.items)
    lr = optimizer.get("lr")
    if not _is_number(lr) or not math.isfinite(lr) or lr <= 0:
        problems.add("optimizer.lr", lr, "the learning rate must be a finite number > 0")
    weight_decay = optimizer.get("weight_decay", 0.0)
    if not _is_number(weight_decay) or not math.isfinite(weight_decay) or weight_decay < 0:
        problems.add("optimizer.weight_decay", weight_decay, "must be a finite number >= 0")
    if "momentum" in optimizer:
        momentum = optimizer["momentum"]
        if not _is_number(momentum) or not 0 <= momentum < 1:
            problems.add("optimizer.momentum", momentum, "must be in [0, 1)")
    if len(problems.items) == before:  # torch's own checks (betas, eps, unknown arguments)
        dummy = [torch.nn.Parameter(torch.zeros(1))]
        _instantiate_into(problems, "optimizer", node, lambda factory: factory(dummy))


def _step_schedule(factory: Callable[..., Any], total_steps: int = 100) -> None:
    """Build the schedule on a dummy optimizer and step it through a whole run of ``total_steps``."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = factory(optimizer, total_steps=total_steps)
    for _ in range(total_steps):
        optimizer.step()
        scheduler.step()


def _check_scheduler(cfg: DictConfig, problems: _Problems) -> None:
    scheduler = _group(cfg, "scheduler", "scheduler=cosine or scheduler=step", problems)
    if scheduler is None:
        return
    before = len(problems.items)
    warmup = scheduler.get("warmup_iters", 0)
    if not _is_int(warmup) or warmup < 0:
        problems.add("scheduler.warmup_iters", warmup, "must be an integer >= 0")
    ratio = scheduler.get("warmup_ratio", 1.0)
    if not _is_number(ratio) or not 0 < ratio <= 1:
        problems.add("scheduler.warmup_ratio", ratio, "must be in (0, 1]")
    gamma = scheduler.get("gamma", 0.1)
    if not _is_number(gamma) or not 0 < gamma <= 1:
        problems.add("scheduler.gamma", gamma, "must be in (0, 1]")
    min_factor = scheduler.get("min_factor", 0.0)
    if not _is_number(min_factor) or not 0 <= min_factor <= 1:
        problems.add("scheduler.min_factor", min_factor, "must be in [0, 1]")
    milestones = scheduler.get("milestones", [])
    if not isinstance(milestones, list) or not all(_is_number(m) and 0 <= m <= 1 for m in milestones):
        problems.add("scheduler.milestones", milestones, "must be fractions of training in [0, 1]")
    if len(problems.items) == before:  # the factory's own checks (policy, unknown arguments)
        _instantiate_into(problems, "scheduler", cfg.get("scheduler"), _step_schedule)


def _check_trainer(cfg: DictConfig, problems: _Problems) -> None:
    trainer = _group(cfg, "trainer", "trainer=cpu or trainer=gpu", problems)
    if trainer is None:
        return
    max_steps, max_epochs = trainer.get("max_steps", -1), trainer.get("max_epochs")
    if not _is_int(max_steps) or (max_steps != -1 and max_steps < 1):
        problems.add("trainer.max_steps", max_steps, "must be -1 (no step limit) or an integer >= 1")
    if max_epochs is not None and (not _is_int(max_epochs) or (max_epochs != -1 and max_epochs < 1)):
        problems.add("trainer.max_epochs", max_epochs, "must be -1/null (no epoch limit) or an integer >= 1")
    if max_steps == -1 and max_epochs in (-1, None):
        problems.add("trainer.max_steps", max_steps, "with max_epochs=-1 the run would never end; set one")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (not _is_number(clip) or not math.isfinite(clip) or clip < 0):
        problems.add("trainer.gradient_clip_val", clip, "must be null or a finite number >= 0")
    for key in ("check_val_every_n_epoch", "log_every_n_steps"):
        value = trainer.get(key, 1)
        if value is not None and (not _is_int(value) or value < 1):
            problems.add(f"trainer.{key}", value, "must be an integer >= 1")


def _check_model(cfg: DictConfig, problems: _Problems) -> None:
    from ghmdet.model import retinanet_arg_problems

    model = _group(cfg, "model", "model=...", problems)
    if model is None:
        return
    for name, message in retinanet_arg_problems(model):
        if name == "backbone":
            backbone = model["backbone"]
            problems.add(
                "model.backbone.name",
                backbone.get("name") if isinstance(backbone, Mapping) else None,
                message,
            )
        else:
            problems.add(f"model.{name}", model[name], message)


def _check_data(cfg: DictConfig, problems: _Problems) -> None:
    from ghmdet.data.annotations import BOX_POLICIES
    from ghmdet.data.transforms import build_train_transforms

    node = cfg.get("data")
    data = _group(cfg, "data", "data=treecrowns, coco or synthetic", problems)
    if data is None:
        return
    before = len(problems.items)
    for key in ("hflip_prob", "vflip_prob", "rot90_prob"):
        value = data.get(key, 0.0)
        if not _is_number(value) or not 0 <= value <= 1:
            problems.add(f"data.{key}", value, "a probability must be in [0, 1]")
    photometric = data.get("photometric", 0.0)
    if not _is_number(photometric) or not math.isfinite(photometric) or photometric < 0:
        problems.add("data.photometric", photometric, "must be a finite number >= 0")
    if data.get("box_policy", "error") not in BOX_POLICIES:
        problems.add("data.box_policy", data.get("box_policy"), f"must be one of {list(BOX_POLICIES)}")
    if data.get("val_batch_size") is not None and (
        not _is_int(data["val_batch_size"]) or data["val_batch_size"] < 1
    ):
        problems.add("data.val_batch_size", data["val_batch_size"], "must be null or an integer >= 1")
    for key in ("limit_train", "limit_val"):
        value = data.get(key)
        if value is not None and (not _is_int(value) or value < 0):
            problems.add(f"data.{key}", value, "must be null or an integer >= 0")
    if len(problems.items) > before:
        return
    try:
        build_train_transforms(
            data.get("hflip_prob", 0.5),
            data.get("vflip_prob", 0.0),
            data.get("photometric", 0.0),
            data.get("rot90_prob", 0.0),
        )
    except ValueError as err:
        problems.add_raw(f"data: {err}")
    # The data module's constructor checks the rest (batch size, workers, prepare) without touching files.
    _instantiate_into(problems, "data", node)


def _check_top_level(cfg: DictConfig, problems: _Problems) -> None:
    seed = cfg.get("seed")
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        problems.add("seed", seed, f"must be an integer in [0, {MAX_SEED}]")
    threads = cfg.get("threads")
    if threads is not None and (not _is_int(threads) or threads < 1):
        problems.add("threads", threads, "must be null (torch's default) or an integer >= 1")
    backend = cfg.get("metric_backend", METRIC_BACKENDS[0])
    if backend not in METRIC_BACKENDS:
        problems.add("metric_backend", backend, f"must be one of {list(METRIC_BACKENDS)}")
    for key in ("resume", "skip_completed"):
        if key in cfg and not isinstance(cfg.get(key), bool):
            problems.add(key, cfg.get(key), "must be true or false")
    min_free = cfg.get("min_free_disk_mb", 0)
    if not _is_number(min_free) or not math.isfinite(min_free) or min_free < 0:
        problems.add("min_free_disk_mb", min_free, "must be a finite number >= 0")


CHECKS: tuple[Callable[[DictConfig, _Problems], None], ...] = (
    _check_top_level,
    _check_losses,
    _check_optimizer,
    _check_scheduler,
    _check_trainer,
    _check_model,
    _check_data,
)


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem of ``cfg`` as ``<key> = <value>: <reason>`` (empty when the config is valid)."""
    problems = _Problems()
    for check in CHECKS:
        check(cfg, problems)
    return problems.items


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line, every problem) unless ``cfg`` is a valid training config."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def override_parse_problem(err: BaseException) -> str | None:
    """One line for a command-line override Hydra's parser cannot read: what it said and the valid form.

    Args:
        err: any exception.

    Returns:
        ``cannot parse the override '<override>': <parser message>; did you mean '<fixed>'? <valid forms>``
        for an :class:`~hydra.errors.OverrideParseException` (the hint only where the fix is certain), else
        None.
    """
    if not isinstance(err, OverrideParseException):
        return None
    override = err.override
    reason = " ".join(
        line.strip()
        for line in str(err).splitlines()
        if line.strip() and not line.startswith(("See https://hydra.cc", "Error parsing override"))
    )
    key, equals, value = override.partition("=")
    hint = ""
    slash_key = _SLASH_BEFORE_DOT.match(key.strip())
    if equals and slash_key:
        prefix, group, rest = slash_key.groups()
        hint = f"; did you mean '{prefix}{group.replace('/', '.')}.{rest}={value}'?"
    elif not equals and not override.startswith("~"):
        hint = f"; did you mean '{override}=<value>'?"
    return (
        f"cannot parse the override '{override}': {reason}{hint if hint else '.'} A value is set with dots "
        "(loss.cls.bins=10), a config group is chosen with slashes (loss/cls=focal), a sweep lists values "
        f"(seed=0,1,2 with -m); grammar: {OVERRIDE_GRAMMAR_URL}"
    )
