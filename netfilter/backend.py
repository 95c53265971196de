"""What every rule backend offers, so the daemon and the tests do not care which one runs."""

from __future__ import annotations

from typing import Protocol

from netfilter.model import Ruleset


class Backend(Protocol):
    """Installs tlsgw's own tables, all at once or not at all; never touches other tables.

    Every method validates the ruleset first and raises `NetfilterError` on any failure,
    in which case nothing has changed.
    """

    def check(self, ruleset: Ruleset) -> None:
        """Would `apply` be accepted? Changes nothing."""

    def apply(self, ruleset: Ruleset) -> None:
        """Replace tlsgw's tables named in `ruleset` by their new contents, atomically.

        Applying the same ruleset twice leaves the same state as applying it once.
        """

    def remove(self, ruleset: Ruleset) -> None:
        """Delete the tables named in `ruleset`; succeeds when they are already gone."""

    def dump(self) -> str:
        """The whole current ruleset as text (including other tables), for diagnostics and tests."""
