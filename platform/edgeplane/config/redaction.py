"""Secret references (``${env:NAME}``, ``${file:PATH}``) and their redaction from every log line and error.

A site file names its secrets by reference; :func:`resolve_secrets` reads them at load time and
tells a :class:`SecretRedactor` each value, which :class:`RedactingFilter` then blanks out of
every log record.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["RedactingFilter", "SecretRedactor", "resolve_secrets"]


class SecretRedactor:
    """Knows every secret value a site resolved and blanks it out of text."""

    MASK = "***"

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str) -> None:
        if value and len(value) >= 3:
            self._values.add(value)

    def merge(self, other: SecretRedactor) -> None:
        """Also redact every secret ``other`` knows (a reloaded site's new secrets)."""
        self._values |= other._values

    def redact(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, self.MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._values)


class RedactingFilter(logging.Filter):
    """A logging filter that blanks secret values out of every record it passes."""

    def __init__(self, redactor: SecretRedactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if self.redactor:
            message = record.getMessage()
            redacted = self.redactor.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


_SECRET_RE = re.compile(r"\$\{(env|file):([^}]*)\}")


def resolve_secrets(value: Any, path: str, base: Path, redactor: SecretRedactor,
                    problems: list[tuple[str, str, str]]) -> Any:
    """``value`` with every ``${env:NAME}`` and ``${file:PATH}`` replaced; each resolved value is added to
    ``redactor``; each reference that cannot be resolved is appended to ``problems`` as (path, message, fix)."""
    if isinstance(value, dict):
        return {k: resolve_secrets(v, f"{path}.{k}" if path else str(k), base, redactor, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, f"{path}[{i}]", base, redactor, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            if ref not in os.environ:
                problems.append((path, f"environment variable {ref!r} is not set", f"export {ref}=... before starting"))
                return ""
            secret = os.environ[ref]
        else:
            file_path = (base / ref).expanduser()
            try:
                secret = file_path.read_text().strip()
            except OSError as e:
                problems.append((path, f"cannot read secret file {str(file_path)!r}: {e.strerror}", "create the file or fix the path"))
                return ""
        redactor.add(secret)
        return secret

    return _SECRET_RE.sub(substitute, value)
