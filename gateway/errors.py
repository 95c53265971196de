"""The root of tlsgw's errors, so the CLI can turn any of them into one clear line."""

from __future__ import annotations

from dataclasses import dataclass


class TlsgwError(Exception):
    """Anything tlsgw reports to an operator as a sentence rather than a traceback."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file, located by its dotted field path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(TlsgwError):
    """A configuration is invalid; carries every problem found, not just the first."""

    def __init__(self, issues: tuple[ConfigIssue, ...] | list[ConfigIssue], source: str = "") -> None:
        self.issues = tuple(issues)
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + f"{len(self.issues)} problem(s):\n" + "\n".join(f"  {i}" for i in self.issues))


class PkiError(TlsgwError):
    """A certificate or key cannot be loaded, created or used."""
