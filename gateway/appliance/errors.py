"""The error of the appliance commands."""

from __future__ import annotations

from gateway.errors import TlsgwError


class ApplianceError(TlsgwError):
    """A bridge layout or a file the appliance commands were asked to write is unusable;
    the message names the option or the file."""
