"""Where a configuration names a certificate, so `tlsgw cert delete` can refuse to remove one
that is in use and say where.

Read from the YAML document itself rather than from the validated model: a configuration
with an unrelated mistake still names its certificates, and refusing a delete because of
a typo elsewhere would be unhelpful, while allowing it because the file did not validate
would be dangerous.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.errors import PkiError


@dataclass(frozen=True, slots=True)
class Reference:
    path: str
    """Dotted path in the configuration, as check-config prints it."""
    role: str
    """What the certificate is there ("signing certificate of client proxy 'outbound'")."""

    def __str__(self) -> str:
        return f"{self.path} ({self.role})"


def _entries(document: Mapping[object, object], section: str) -> list[tuple[int, Mapping[object, object]]]:
    items = document.get(section)
    if not isinstance(items, list):
        return []
    return [(i, item) for i, item in enumerate(items) if isinstance(item, Mapping)]


def find_references(document: object, name: str) -> tuple[Reference, ...]:
    """Every place in a parsed configuration document that names certificate `name`."""
    if not isinstance(document, Mapping):
        return ()
    found: list[Reference] = []
    for i, proxy in _entries(document, "client_proxies"):
        if proxy.get("signing_certificate") == name:
            found.append(Reference(f"client_proxies[{i}].signing_certificate",
                                   f"signing certificate of client proxy {proxy.get('name')!r}"))
    for i, proxy in _entries(document, "server_proxies"):
        certificates = proxy.get("certificates")
        for j, cert in enumerate(certificates if isinstance(certificates, list) else ()):
            if cert == name:
                found.append(Reference(f"server_proxies[{i}].certificates[{j}]",
                                       f"certificate of server proxy {proxy.get('name')!r}"))
    for i, store in _entries(document, "trust_stores"):
        cas = store.get("ca_certificates")
        for j, cert in enumerate(cas if isinstance(cas, list) else ()):
            if cert == name:
                found.append(Reference(f"trust_stores[{i}].ca_certificates[{j}]",
                                       f"CA certificate of trust store {store.get('name')!r}"))
    return tuple(found)


def load_references(config_path: str | Path, name: str) -> tuple[Reference, ...]:
    """`find_references` for a configuration file.

    Raises:
        PkiError: the file cannot be read or is not YAML; then nobody can tell whether
            the certificate is in use.
    """
    try:
        text = Path(config_path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PkiError(f"{config_path}: cannot read the configuration to check references ({exc.strerror})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PkiError(f"{config_path}: not valid YAML, so its references to certificates are unknown "
                       f"({exc})") from None
    return find_references(document, name)
