"""Secrets never reach what a run writes: ``metrics.json``, logger hyperparameters, ``.hydra/``, the log.

A secret is the value of a secret-looking environment variable (``WANDB_API_KEY`` and other
``*KEY``/``*TOKEN``/``*SECRET``/``*PASSWORD`` names) or of a config field named like that.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from ghmdet.files import write_text_atomic

REDACTED = "<redacted>"
# Environment variables whose values are secrets, and config keys whose values are.
_SECRET_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
_SECRET_FIELD = re.compile(r"(api_?key|token|secret|password|passwd|credentials?)$", re.IGNORECASE)
# Shorter values would be redacted inside unrelated text (and are no real secrets).
_MIN_SECRET_LENGTH = 8


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking environment variables (``WANDB_API_KEY``, ``*_TOKEN``, ...), longest first."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret value replaced by ``<redacted>``."""
    for secret in secret_values() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any, secrets: Iterable[str] | None = None) -> Any:
    """A copy of a JSON-like ``value`` with secret values and secret-named fields redacted."""
    secrets = secret_values() if secrets is None else list(secrets)
    if isinstance(value, Mapping):
        return {
            k: (
                REDACTED
                if isinstance(k, str) and _SECRET_FIELD.search(k) and v not in (None, "")
                else redact(v, secrets)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, secrets) for v in value)
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def redact_file(path: str | os.PathLike[str]) -> bool:
    """Rewrite a text file with secrets redacted (atomically); returns whether anything changed."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    cleaned = redact_text(text)
    if cleaned == text:
        return False
    write_text_atomic(path, cleaned)
    return True


class RedactingFilter(logging.Filter):
    """A logging filter that replaces secret values in the formatted message (installed on the handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secret_values()
        if not secrets:
            return True
        message = record.getMessage()
        cleaned = redact_text(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger), once."""
    logger = logging.getLogger() if logger is None else logger
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def redact_hydra_files(out_dir: Path) -> None:
    """Hydra saved the composed config and the command line under ``.hydra/``: redact secrets there."""
    subdir = HydraConfig.get().output_subdir if HydraConfig.initialized() else ".hydra"
    if subdir is None:
        return
    for path in (out_dir / str(subdir)).glob("*.yaml"):
        redact_file(path)
