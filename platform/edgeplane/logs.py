"""Log set-up: readable text for a terminal, one JSON object per line for collectors.

Every record passes through the site's secret redactor, so a secret resolved from
``${env:...}`` or ``${file:...}`` never reaches a log: the message (a filter), and the whole
formatted line or JSON object, tracebacks and ``extra=`` fields included (the formatters).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from edgeplane.config import RedactingFilter, SecretRedactor

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class RedactingFormatter(logging.Formatter):
    """Text lines with every secret blanked out of the whole line: message, traceback, stack."""

    def __init__(self, fmt: str, datefmt: str | None, redactor: SecretRedactor | None):
        super().__init__(fmt, datefmt)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return self.redactor.redact(line) if self.redactor else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and any ``extra=`` fields.

    With a redactor, every field (the exception's traceback and ``extra=`` values too) has
    secrets blanked out before it is encoded, so an escaped secret cannot slip past.
    """

    def __init__(self, redactor: SecretRedactor | None = None):
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str | int | float | bool | None] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        if self.redactor:
            entry = {k: self.redactor.redact(v) if isinstance(v, str) else v for k, v in entry.items()}
        return json.dumps(entry)


def configure_logging(level: str = "info", fmt: str = "text", redactor: SecretRedactor | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(redactor))
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S", redactor))
    if redactor is not None:
        handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log would log every scrape; our own parts log what matters
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
