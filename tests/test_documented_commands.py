"""Every training command shown in README.md and docs/*.md parses and composes against conf/ (no training).

The commands are taken from the fenced code blocks and the inline code of the docs: ``make train ...``,
``make ablation ...``, ``ghmdet-train ...`` and ``python -m ghmdet.train ...``. ``make`` commands go through
the real Makefile with the interpreter replaced by a script that prints its arguments, so what is checked is
what make would run. Each resulting command line is parsed by Hydra's override parser (fast), then, in the
slow test, composed and passed through the start-up config validation: a single run as it is, a multirun
as its master config and one job per value of each swept key, the sweep expanded as the basic sweeper does.
Placeholders in the docs (``<p>``, ``...``, ``trainer.devices=N``) are replaced by the rules below; a new one
fails the test until a rule is added. An unparsable override gets one line naming it and its valid form.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import ghmdet.distributed  # noqa: F401 -- registers the ghmdet.* resolvers
from ghmdet.ablation.spec import Job, expand_jobs
from ghmdet.cli import error_line
from ghmdet.config_validation import config_problems
from ghmdet.paths import CONFIG_DIR, PROJECT_ROOT

DOC_FILES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
#: a training command (``ghmdet-train:`` is the error prefix quoted in the docs, not a command)
COMMAND = re.compile(
    r"^(?:time\s+)?(?:\S*/)?(?:make\s+(?:train|ablation)|ghmdet-train|python\s+-m\s+ghmdet\.train)(?=\s|$)"
)
#: ``<name>`` placeholders of the docs and what stands in for them
PLACEHOLDERS = {
    "<p>": "gpu",
    "<table>": "bins",
    "<preset>": "treecrowns",
    "<SEEDS>": "0,1",
    "<LAUNCHER>": "slurm",
    "<ARGS>": "",
}
#: placeholder values written as one capital letter (``trainer.devices=N``, ``seed=S``)
LETTER_VALUES = {"N": "2", "S": "0"}
PLACEHOLDER = re.compile(r"<[^<>\s]*>")
#: doc text that matches COMMAND but describes a command's shape rather than one to run
NOT_COMMANDS = ("<this job's task overrides>",)  # docs/scaling.md: what a DDP child is started with
#: job overrides (all present) that fail validation for a reason reported and not fixed yet, and why: a
#: command is an expected failure while these are its only problems; test_known_problems_are_still_there
#: fails once one is fixed, so that its entry goes
KNOWN_PROBLEMS: dict[tuple[str, ...], str] = {}


@dataclass(frozen=True)
class DocCommand:
    """A command line as the docs show it, and where."""

    where: str
    text: str


def _fenced_and_prose(text: str) -> tuple[list[str], list[str]]:
    """The lines of fenced code blocks (backslash continuations joined) and the prose paragraphs."""
    code, prose, paragraph, fenced, pending = [], [], [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append(" ".join(paragraph))
            paragraph = []
            continue
        if fenced:
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            code.append(pending.strip())
            pending = ""
        elif line.strip():
            paragraph.append(line.strip())
        else:
            prose.append(" ".join(paragraph))
            paragraph = []
    prose.append(" ".join(paragraph))
    return code, prose


def documented_commands() -> list[DocCommand]:
    """Every training command of the docs, once each, with the first file that shows it."""
    found: dict[str, DocCommand] = {}
    for path in DOC_FILES:
        code, prose = _fenced_and_prose(path.read_text())
        inline = [span.strip() for paragraph in prose for span in re.findall(r"`([^`]+)`", paragraph)]
        for text in code + inline:
            text = " ".join(text.split())
            if not COMMAND.match(text) or any(n in text for n in NOT_COMMANDS):
                continue
            key = shlex.join(shlex.split(text, comments=True))  # the same command with another comment
            if key not in found:
                found[key] = DocCommand(str(path.relative_to(PROJECT_ROOT)), text)
    return list(found.values())


def _substitute(token: str) -> str | None:
    """A doc token with its placeholders filled in; None to leave the token out (``...``)."""
    if token == "...":
        return None
    if token.startswith("[") and "=" in token:  # an optional part of a synopsis: [seed=<SEEDS>]
        token = token[1:]
    if token.endswith("]") and "[" not in token:
        token = token[:-1]
    for placeholder in PLACEHOLDER.findall(token):
        if placeholder not in PLACEHOLDERS:
            raise AssertionError(
                f"unknown placeholder {placeholder} in {token!r}: add a rule to PLACEHOLDERS"
            )
        token = token.replace(placeholder, PLACEHOLDERS[placeholder])
    key, equals, value = token.partition("=")
    if equals and value in LETTER_VALUES:
        token = f"{key}={LETTER_VALUES[value]}"
    return token or None


def _words(text: str) -> list[str]:
    """Shell words of a doc command (comments dropped), placeholders filled in."""
    words = []
    for word in shlex.split(text, comments=True):
        name, equals, value = word.partition("=")
        if equals and name.isupper() and name.isidentifier():  # a make variable: its value holds words too
            filled = [w for w in map(_substitute, shlex.split(value)) if w is not None]
            words.append(f"{name}={shlex.join(filled) if name == 'ARGS' else ' '.join(filled)}")
        else:
            substituted = _substitute(word)
            if substituted is not None:
                words.append(substituted)
    return words


@pytest.fixture(scope="module")
def argv_printer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for the interpreter that prints its command line as JSON."""
    script = tmp_path_factory.mktemp("make") / "print_argv.py"
    script.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    return script


def training_argvs(words: list[str], printer: Path) -> list[list[str]]:
    """The ``ghmdet.train`` arguments each command line runs (``make``: as the Makefile expands them)."""
    if words[0] == "time":
        words = words[1:]
    program = Path(words[0]).name
    if program == "ghmdet-train":
        return [words[1:]]
    if program == "python":
        assert words[1:3] == ["-m", "ghmdet.train"], words
        return [words[3:]]
    assert program == "make", words
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    interpreter = f"{shlex.quote(sys.executable)} {shlex.quote(str(printer))}"
    # No prerequisites (venv, data): only the recipe's command lines, run through the printer.
    proc = subprocess.run(
        [
            *("make", "-s", "--no-print-directory", "-C", str(PROJECT_ROOT), *words[1:]),
            *(f"PY={interpreter}", "STAMP=", "TREECROWNS=", "DIGITS="),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
    )
    assert proc.returncode == 0, proc.stderr
    argvs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("[")]
    assert argvs and all(argv[:2] == ["-m", "ghmdet.train"] for argv in argvs), proc.stdout
    return [argv[2:] for argv in argvs]


def _validated(config: DictConfig) -> list[str]:
    HydraConfig.instance().set_config(config)  # what the app does, so ${hydra:...} resolves
    return config_problems(config)


def _split_multirun(argv: list[str]) -> tuple[bool, list[str]]:
    multirun = any(flag in argv for flag in ("-m", "--multirun"))
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    flags = [a for a in overrides if a.startswith("-")]
    assert not flags, f"flags {flags}: only -m/--multirun are understood here; extend the test"
    return multirun, overrides


def _is_group(key: str) -> bool:
    """Whether an override key chooses a config group (``trainer``, ``loss/cls``; not ``loss.cls.bins``)."""
    return (CONFIG_DIR / key.lstrip("+~")).is_dir()


def representative_jobs(jobs: list[Job]) -> list[Job]:
    """The first job, and one job per choice of each swept config group (``loss/cls=ce,focal``).

    Composing is what takes time (about a second per job on the 2-core machine; the embedded ablation alone
    has 58 jobs); a swept value (``seed``, ``loss.cls.bins``) is parsed for every job and composes like the
    first job's, while another group choice pulls in other config files, so each of those is composed.
    """
    chosen: dict[tuple[str, str], Job] = {}
    for job in jobs:
        for key, value in job.values.items():
            if _is_group(key):
                chosen.setdefault((key, value), job)
    unique = {job.overrides: job for job in [jobs[0], *chosen.values()]}
    return list(unique.values())


_COMPOSED: dict[tuple[str, ...], list[str]] = {}  # cache key -> problems, shared by all commands


def _is_hydra(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def _cache_key(job: Job, first: bool) -> tuple[str, ...]:
    """What decides a job's validation. ``hydra.*`` / ``hydra/`` overrides configure the launcher and the run
    dirs, not what is validated. The first job of a command is composed with all of that command's values;
    the other jobs stand for a group choice, composed once per set of group choices (a command's plain values
    are checked by its first job)."""
    task = [o for o in job.overrides if not _is_hydra(o)]
    return tuple(task if first else [o for o in task if _is_group(o.partition("=")[0])])


def composition_problems(argv: list[str]) -> list[tuple[tuple[str, ...], list[str]]]:
    """``(overrides, problems)`` of every configuration composed for one ``ghmdet.train`` command line."""
    multirun, overrides = _split_multirun(argv)
    loader = GlobalHydra.instance().config_loader()
    if not multirun:
        config = loader.load_configuration("train", overrides, run_mode=RunMode.RUN)
        return [(tuple(overrides), _validated(config))]
    master = loader.load_configuration("train", overrides, run_mode=RunMode.MULTIRUN)
    params = master.hydra.sweeper.get("params")
    jobs, _ = expand_jobs(OmegaConf.to_container(params, resolve=True) if params else {}, overrides)
    assert jobs, overrides
    results = []
    for index, job in enumerate(representative_jobs(jobs)):
        key = _cache_key(job, first=index == 0)
        if key not in _COMPOSED:
            _COMPOSED[key] = _validated(loader.load_sweep_config(master, list(job.overrides)))
        results.append((job.overrides, _COMPOSED[key]))
    return results


def _known(overrides: tuple[str, ...]) -> str | None:
    return next((why for keys, why in KNOWN_PROBLEMS.items() if set(keys) <= set(overrides)), None)


COMMANDS = documented_commands()
IDS = [f"{c.where}: {c.text}" for c in COMMANDS]


def test_the_docs_show_commands_of_every_kind() -> None:
    programs = {Path(_words(c.text)[1 if c.text.startswith("time ") else 0]).name for c in COMMANDS}
    assert programs == {"make", "ghmdet-train", "python"}
    assert any(c.text.startswith("make ablation") for c in COMMANDS)
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_documented_command_parses(command: DocCommand, argv_printer: Path) -> None:
    for argv in training_argvs(_words(command.text), argv_printer):
        try:
            OverridesParser.create().parse_overrides(_split_multirun(argv)[1])
        except OverrideParseException as err:
            raise AssertionError(f"{command.where}: `{command.text}` -> {argv}: {error_line(err)}") from err


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_documented_command_composes(command: DocCommand, argv_printer: Path, hydra_conf: None) -> None:
    failures, known = [], []
    for argv in training_argvs(_words(command.text), argv_printer):
        try:
            results = composition_problems(argv)
        except Exception as err:  # a composition error: unknown choice, unknown key
            failures.append(f"{argv}: {error_line(err) or err}")
            continue
        for overrides, problems in results:
            why = _known(overrides)
            if problems and why:
                known.append(f"{list(overrides)}: {why}")
            elif problems:
                failures.append(f"{list(overrides)}: {'; '.join(problems)}")
    assert not failures, f"{command.where}: `{command.text}`:\n" + "\n".join(failures)
    if known:
        pytest.xfail("; ".join(known))


@pytest.mark.slow
@pytest.mark.parametrize("overrides", list(KNOWN_PROBLEMS), ids=[" ".join(k) for k in KNOWN_PROBLEMS])
@pytest.mark.xfail(strict=True, reason="a known problem (KNOWN_PROBLEMS); passing means it is fixed")
def test_known_problems_are_still_there(overrides: tuple[str, ...], hydra_conf: None) -> None:
    results = composition_problems(["-m", *overrides])
    assert results and all(not problems for _, problems in results)


def test_placeholder_rules() -> None:
    assert _words('make train ARGS="seed=S trainer.devices=N ..."') == [
        "make",
        "train",
        "ARGS=seed=0 trainer.devices=2",
    ]
    assert _words("ghmdet-train -m hydra/launcher=slurm hydra.launcher.partition=<p> ...") == [
        "ghmdet-train",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
    ]
    assert _words("python -m ghmdet.train -m +ablation=<table> [seed=<SEEDS>] [a=1 b=2]") == [
        "python",
        "-m",
        "ghmdet.train",
        "-m",
        "+ablation=bins",
        "seed=0,1",
        "a=1",
        "b=2",
    ]
    with pytest.raises(AssertionError, match="unknown placeholder <dir>"):
        _words("ghmdet-train hydra.run.dir=<dir>")


def test_representative_jobs_cover_every_swept_group_choice() -> None:
    jobs, _ = expand_jobs({"loss/cls": "ce,focal,ghmc", "loss.cls.loss_weight": "1,2"}, ["seed=0,1,2"])
    chosen = representative_jobs(jobs)
    assert len(jobs) == 18 and chosen[0] == jobs[0]
    assert sorted(job.values["loss/cls"] for job in chosen) == ["ce", "focal", "ghmc"]


# --------------------------------------------------------------------------- unparsable overrides


def _parse_error(override: str) -> OverrideParseException:
    with pytest.raises(OverrideParseException) as error:
        OverridesParser.create().parse_overrides([override])
    return error.value


@pytest.mark.parametrize(
    ("override", "fix"),
    [
        ("loss/cls.bins=10", "loss.cls.bins=10"),
        ("+loss/cls.gamma=2", "+loss.cls.gamma=2"),
        ("hydra/launcher.partition=a100", "hydra.launcher.partition=a100"),
        ("loss.cls.bins", "loss.cls.bins=<value>"),
    ],
)
def test_unparsable_override_names_it_and_the_valid_form(override: str, fix: str) -> None:
    line = error_line(_parse_error(override))
    assert line is not None and "\n" not in line
    assert line.startswith(f"config error: cannot parse the override '{override}': ")
    assert f"did you mean '{fix}'?" in line
    assert "loss.cls.bins=10" in line and "loss/cls=focal" in line
    assert line.endswith("grammar: https://hydra.cc/docs/advanced/override_grammar/basic/")


def test_unparsable_override_without_a_certain_fix_still_shows_the_forms() -> None:
    line = error_line(_parse_error("seed=[1,2"))
    assert line is not None and line.startswith("config error: cannot parse the override 'seed=[1,2': ")
    assert "did you mean" not in line and "A value is set with dots (loss.cls.bins=10)" in line


@pytest.mark.slow
def test_cli_names_the_unparsable_override_and_its_valid_form(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ghmdet.train", "loss/cls.bins=10", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        "ghmdet-train: error: config error: cannot parse the override 'loss/cls.bins=10'"
    )
    assert "did you mean 'loss.cls.bins=10'?" in lines[0] and "See for details" not in lines[0]
