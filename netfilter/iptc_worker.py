"""The python-iptables half of the iptables backend, run as a child process.

Why a child process: libiptc keeps one raw socket per *process* (opened by the first
`iptc_init`, closed when the last handle is freed) and python-iptables caches its Table
objects, handles open, for the life of the process. That socket belongs to the network
namespace it was opened in, so mixing namespaces in one process - or a thread that
setns()es, as `sysctl.py` can afford to - could silently program the wrong namespace. A
process started under `ip netns exec` (or on the host) has all of libiptc in one
namespace, and nothing of it outlives the call. It also keeps libiptc's global state and
its exit()-happy error paths out of the daemon.

Protocol: one JSON request on stdin, `{"action": "check" | "apply" | "remove",
"plan": <XtPlan.to_json()>, "nft": <nft script or "">}`; one JSON answer on stdout,
`{"ok": true}` or `{"ok": false, "command", "message", "line", "errno"}`; exit status
0 or 1.

Transactions
------------
apply:
  1. take the xtables lock (`/run/xtables.lock`, flock, as iptables-legacy does), so no
     iptables command interleaves with ours;
  2. for each iptables table, in `COMMIT_ORDER`, that holds chains of the plan's owners
     or will: snapshot those chains and the jumps to them (python-iptables Rule
     objects), delete them, create the new ones, commit - the kernel swaps the whole
     table or refuses it and keeps the old one;
  3. load the nft script for the bridge tables (one nft transaction);
  4. if step 2 fails on a later table, or step 3 fails, put the snapshots of the tables
     already committed back, newest first, and report the first error.
  The IP-layer rules go in before the bridge divert, so a newly diverted frame always
  finds its TPROXY rule.
check: steps 1 and 2 without committing (libiptc's own checks), then `nft -c`.
remove: the nft script first (the bridge stops diverting), then the chains and jumps.

python-iptables creates every legacy table it merely looks at (a jump target is
resolved by asking each table whether the chain exists), so before anything else the
worker tells it which tables exist - those in `/proc/net/ip_tables_names` plus those
the plan needs - and tables nobody used stay unregistered.
"""

from __future__ import annotations

import errno as errno_module
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from netfilter.errors import NetfilterError
from netfilter.nft_backend import NftBackend
from netfilter.render_iptables import (
    BUILTIN_CHAINS,
    COMMIT_ORDER,
    XtPlan,
    XtRule,
    XtTable,
    owner_of,
)

TABLE_NAMES_FILE = "/proc/net/ip_tables_names"
# iptables' compiled-in default; iptables >= 1.8.? honours XTABLES_LOCKFILE, and so do we.
DEFAULT_LOCK_FILE = "/run/xtables.lock"
# iptables -w waits indefinitely; a bounded wait turns a stuck holder into an error
# naming the lock instead of a hung daemon start.
LOCK_WAIT_S = 30.0
LOCK_POLL_S = 0.05

_STRERRORS: dict[str, int] = {os.strerror(c): c for c in sorted(errno_module.errorcode, reverse=True)}


@dataclass(slots=True)
class _Snapshot:
    """One iptables table's chains of the owners, and the jumps to them, before a change."""

    table: XtTable
    chains: dict[str, list[Any]] = field(default_factory=dict)
    jumps: list[tuple[str, int, Any]] = field(default_factory=list)
    """(built-in chain, position, rule) in ascending position."""


def existing_tables() -> set[str]:
    try:
        with open(TABLE_NAMES_FILE, encoding="ascii") as handle:
            return set(handle.read().split())
    except FileNotFoundError:
        return set()  # no ip_tables in this kernel at all: nothing of ours can exist


class Worker:
    def __init__(self, plan: XtPlan) -> None:
        import iptc  # type: ignore[import-untyped]

        self.iptc = iptc
        self.plan = plan
        self.present = existing_tables()
        needed = {t.value for t in plan.tables()}
        # Before any Table() call: see the module docstring.
        for name in iptc.Table.ALL:
            iptc.Table.existing_table_names[name] = name in self.present or name in needed
        self.touched = [t for t in COMMIT_ORDER if t.value in self.present or t.value in needed]

    # ------------------------------------------------------------------ transactions

    def apply(self, nft_script: str, *, check: bool) -> None:
        committed: list[_Snapshot] = []
        try:
            for table in self.touched:
                snapshot = self._replace(table, commit=not check)
                if snapshot is not None and not check:
                    committed.append(snapshot)
            if nft_script:
                NftBackend().load_script(nft_script, check=check)
        except NetfilterError as exc:
            failed = self._roll_back(committed)
            if failed:
                raise NetfilterError(exc.command, exc.message + "\nand putting the previous rules back failed: "
                                     + "; ".join(failed), line=exc.line, errno=exc.errno) from exc
            raise

    def remove(self, nft_script: str) -> None:
        if nft_script:
            NftBackend().load_script(nft_script)
        for table in COMMIT_ORDER:
            if table.value in self.present:
                self._replace(table, commit=True, install=False)

    # ------------------------------------------------------------------ one table

    def _table(self, table: XtTable) -> Any:
        handle = self.iptc.Table(table.value, autocommit=False)
        handle.refresh()
        return handle

    def _replace(self, table: XtTable, *, commit: bool, install: bool = True) -> _Snapshot | None:
        """Swap the owners' chains of `table` for the plan's; None when there was nothing to do."""
        with _xt_errors(f"iptables-legacy -t {table.value}"):
            handle = self._table(table)
            snapshot = self._snapshot(handle, table)
            wanted = [c for c in self.plan.chains if c.table is table] if install else []
            if not snapshot.chains and not snapshot.jumps and not wanted:
                return None
            self._delete_ours(handle, snapshot)
            self._install(handle, table, wanted)
            if commit:
                self._commit(handle, table)
        return snapshot

    def _snapshot(self, handle: Any, table: XtTable) -> _Snapshot:
        snapshot = _Snapshot(table)
        for chain in handle.chains:
            if owner_of(chain.name) in self.plan.owners:
                snapshot.chains[chain.name] = [_detached(rule) for rule in chain.rules]
        for builtin in BUILTIN_CHAINS[table]:
            if not handle.is_chain(builtin):
                continue
            for position, rule in enumerate(self.iptc.Chain(handle, builtin).rules):
                if owner_of(_target_name(rule)) in self.plan.owners:
                    snapshot.jumps.append((builtin, position, _detached(rule)))
        return snapshot

    def _delete_ours(self, handle: Any, snapshot: _Snapshot) -> None:
        for builtin, _, rule in reversed(snapshot.jumps):
            self.iptc.Chain(handle, builtin).delete_rule(rule)
        for name in snapshot.chains:
            handle.flush_entries(name)
        for name in snapshot.chains:
            handle.delete_chain(name)

    def _install(self, handle: Any, table: XtTable, chains: list[Any]) -> None:
        for chain in chains:  # all chains first: rules may jump to helper chains
            handle.create_chain(chain.name)
        for chain in chains:
            target = self.iptc.Chain(handle, chain.name)
            for rule in chain.rules:
                target.append_rule(self._build(rule))
        for position, (builtin, rule) in enumerate(self.plan.jumps(table)):
            self.iptc.Chain(handle, builtin).insert_rule(self._build(rule), position)

    def _restore(self, handle: Any, snapshot: _Snapshot) -> None:
        for name in snapshot.chains:
            handle.create_chain(name)
        for name, rules in snapshot.chains.items():
            for rule in rules:
                self.iptc.Chain(handle, name).append_rule(rule)
        for builtin, position, rule in snapshot.jumps:
            self.iptc.Chain(handle, builtin).insert_rule(rule, position)

    def _commit(self, handle: Any, table: XtTable) -> None:
        try:
            handle.commit()
        except self.iptc.IPTCError as exc:
            text = _text(exc).removeprefix("can't commit: ")
            raise NetfilterError(f"iptables-legacy -t {table.value} (commit)",
                                 f"the kernel refused the table: {text}", errno=_STRERRORS.get(text)) from exc

    def _roll_back(self, committed: list[_Snapshot]) -> list[str]:
        """Put the snapshots back, newest first; returns what could not be put back."""
        failed: list[str] = []
        for snapshot in reversed(committed):
            try:
                with _xt_errors(f"iptables-legacy -t {snapshot.table.value} (roll back)"):
                    handle = self._table(snapshot.table)
                    self._delete_ours(handle, self._snapshot(handle, snapshot.table))
                    self._restore(handle, snapshot)
                    self._commit(handle, snapshot.table)
            except NetfilterError as exc:  # reported with the original failure
                failed.append(str(exc))
        return failed

    def _build(self, spec: XtRule) -> Any:
        rule = self.iptc.Rule()
        if spec.protocol:
            rule.protocol = spec.protocol
        if spec.in_interface:
            rule.in_interface = spec.in_interface
        if spec.source:
            rule.src = spec.source
        if spec.destination:
            rule.dst = spec.destination
        for match in spec.matches:
            created = rule.create_match(match.name)
            for key, value in match.options:
                created.set_parameter(key, value)
        if spec.target is not None:
            target = rule.create_target(spec.target.name)
            for key, value in spec.target.options:
                target.set_parameter(key, value)
        return rule


def _detached(rule: Any) -> Any:
    """The rule with its own copy of the entry header.

    python-iptables copies a listed rule's matches and target into buffers of its own but
    keeps pointing at the entry header (addresses, interfaces, protocol) inside libiptc's
    handle, which the next commit or refresh frees. A snapshot must survive both.
    """
    rule.entry = type(rule.entry).from_buffer_copy(rule.entry)
    return rule


def _target_name(rule: Any) -> str:
    target = rule.target
    return str(getattr(target, "name", "") or "") if target is not None else ""


def _text(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    if text.startswith("can't commit: b'"):  # python-iptables formats C strings as bytes reprs
        text = "can't commit: " + text[len("can't commit: b'"):].rstrip("'")
    return text


@contextmanager
def _xt_errors(command: str) -> Iterator[None]:
    """python-iptables raises IPTCError, XTablesError or ValueError: name the table instead."""
    try:
        yield
    except NetfilterError:
        raise
    except Exception as exc:
        text = _text(exc)
        raise NetfilterError(command, text, errno=_STRERRORS.get(text.rsplit(": ", 1)[-1])) from exc


class _XtablesLock:
    """flock on the file iptables-legacy locks, bounded wait."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise NetfilterError(f"lock {self.path}", exc.strerror or str(exc), errno=exc.errno) from exc
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise NetfilterError(f"lock {self.path}", f"another iptables user held the lock for "
                                         f"{LOCK_WAIT_S:g}s", errno=errno_module.EAGAIN) from None
                time.sleep(LOCK_POLL_S)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def handle(request: dict[str, Any]) -> None:
    """Run one request; raises NetfilterError."""
    action = request["action"]
    plan = XtPlan.from_json(request["plan"])
    with _XtablesLock(os.environ.get("XTABLES_LOCKFILE", DEFAULT_LOCK_FILE)):
        worker = Worker(plan)
        if action == "remove":
            worker.remove(request.get("nft", ""))
        elif action in ("apply", "check"):
            worker.apply(request.get("nft", ""), check=action == "check")
        else:
            raise NetfilterError("iptc worker", f"unknown action {action!r}")


def main() -> int:
    try:
        handle(json.loads(sys.stdin.read()))
    except NetfilterError as exc:
        answer: dict[str, Any] = {"ok": False, "command": exc.command, "message": exc.message,
                                  "line": exc.line, "errno": exc.errno}
    except Exception as exc:  # reported to the parent, which raises NetfilterError with it
        answer = {"ok": False, "command": "iptc worker", "message": f"{type(exc).__name__}: {exc}",
                  "line": None, "errno": None}
    else:
        answer = {"ok": True}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
