"""The CLI's side of keys kept only in the gateway's memory (issue 4, `pki.persist_keys:
false`): handing private keys to the running gateway, asking it to reload, and asking
which keys it holds - all over its control socket.

The keys travel as PEM on the local Unix socket, whose peer credentials the gateway
checks (admin role only); they are never written to a file or printed. Every failure is
a PkiError that says what happened and what was left unchanged, so `tlsgw cert` reports
it as any other refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from cryptography import x509

from gateway.control.protocol import Command, Request, Response
from gateway.errors import PkiError
from gateway.pki.keys import PrivateKey
from gateway.pki.memory_keys import key_to_wire

# The gateway only decodes and checks the keys; a reload (workers included) is asked for
# separately and may take as long as a worker's start-up (workers.pool.PREPARE_TIMEOUT).
HANDOVER_TIMEOUT = 30.0
RELOAD_TIMEOUT = 150.0


def _ask(socket_path: str, request: Request, timeout: float) -> Response:
    """Raises: ControlSocketError (nobody answers)."""
    from gateway.control.server import request as send

    return asyncio.run(send(socket_path, request, timeout=timeout))


def hand_keys(socket_path: str, pki_dir: str,
              keys: Sequence[tuple[str, PrivateKey, x509.Certificate]]) -> dict[str, Any]:
    """Give the running gateway these (name, key, certificate) to keep in memory; it checks
    each key against its certificate and that it uses the store `pki_dir`.

    Raises:
        PkiError: no gateway answers on `socket_path`, or it refused (not an admin, a
            store other than its own, a key not matching); it keeps none of them then.
    """
    from gateway.control.server import ControlSocketError

    request = Request(Command.IMPORT_KEYS, {"pki_dir": pki_dir,
                                            "keys": [key_to_wire(n, k, c) for n, k, c in keys]})
    try:
        response = _ask(socket_path, request, HANDOVER_TIMEOUT)
    except ControlSocketError as exc:
        raise PkiError(f"pki.persist_keys is false, so a private key can only be kept in the memory of the "
                       f"running gateway, and none answers: {exc}; start tlsgw (systemctl start tlsgw), then "
                       "import again; nothing was imported") from None
    if not response.ok:
        raise PkiError(f"the gateway refused the private key(s): {response.error}; nothing was imported")
    return response.result if isinstance(response.result, dict) else {}


def reload_gateway(socket_path: str) -> tuple[bool, str]:
    """Ask the gateway to reload; (done, its message or error)."""
    from gateway.control.server import ControlSocketError

    try:
        response = _ask(socket_path, Request(Command.RELOAD), RELOAD_TIMEOUT)
    except ControlSocketError as exc:
        return False, str(exc)
    if not response.ok:
        return False, response.error or "refused"
    result = response.result if isinstance(response.result, dict) else {}
    return True, str(result.get("message", "reloaded"))


def gateway_key_ids(socket_path: str) -> tuple[frozenset[str] | None, str]:
    """The public key ids of the keys the running gateway holds in memory, or None and
    why not (no gateway answers, or the caller may not ask)."""
    from gateway.control.server import ControlSocketError

    try:
        response = _ask(socket_path, Request(Command.STATUS), HANDOVER_TIMEOUT)
    except ControlSocketError as exc:
        return None, str(exc)
    if not response.ok:
        return None, f"{socket_path}: {response.error}"
    keys = response.result.get("keys", {}) if isinstance(response.result, dict) else {}
    held = keys.get("in_memory", []) if isinstance(keys, dict) else []
    return frozenset(str(k.get("key_id")) for k in held if isinstance(k, dict)), ""
