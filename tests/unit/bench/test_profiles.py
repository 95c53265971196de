"""Summaries of py-spy's collapsed stacks (tests/bench/profiles.py)."""

from __future__ import annotations

from tests.bench.profiles import Frame, parse_collapsed

RUN = "<module> (gateway/__main__.py:4);main (gateway/cli.py:90);Loop__run (loop.c:1200)"
STACKS = [
    f"{RUN};Relay._arrived (gateway/proxy/relay.py:183);TlsEndpoint.read_plaintext (gateway/tls/endpoint.py:104);"
    "_aesni_ctr32_ghash_6x (cryptography/hazmat/bindings/_rust.abi3.so) 6",
    f"{RUN};Relay._arrived (gateway/proxy/relay.py:190);UVStream__try_write (loop.c:80);write (libc.so.6) 3",
    f"{RUN};uv__io_poll (linux.c:10);epoll_wait (libc.so.6) 50",
    "Thread._bootstrap (threading.py:995);NftShell._read_errors (netfilter/live.py:70);read (libc.so.6) 40",
    "Thread._bootstrap (threading.py:995);Queue.get (queue.py:171);"
    "PyThread_acquire_lock_timed (libpython3.11.so.1.0);0x7f4e0a6a3f16 (libc.so.6) 20",
    f"{RUN};Relay._arrived (gateway/proxy/relay.py:183);Relay._arrived (gateway/proxy/relay.py:200);"
    "memcpy (libc.so.6) 1",
]


def test_waiting_threads_are_left_out() -> None:
    costs = parse_collapsed(STACKS)
    assert (costs.samples, costs.idle, costs.busy) == (120, 110, 10)


def test_self_time_by_library_and_function() -> None:
    costs = parse_collapsed(STACKS)
    assert costs.self_samples["write (libc.so.6)"] == 3
    assert costs.groups[Frame("x", "cryptography/hazmat/bindings/_rust.abi3.so").group] == 6
    assert costs.groups[Frame("x", "libc.so.6").group] == 4


def test_recursion_counts_once_in_total_time() -> None:
    costs = parse_collapsed(STACKS)
    assert costs.own_total["Relay._arrived (gateway/proxy/relay.py)"] == 10


def test_python_frames_group_by_top_level_package() -> None:
    assert Frame.parse("Relay._arrived (gateway/proxy/relay.py:183)").group == "gateway (Python)"
    assert Frame.parse("Connection.recv (OpenSSL/SSL.py:12)").group == "OpenSSL (Python)"


def test_lines_that_are_not_stacks_are_ignored() -> None:
    assert parse_collapsed(["", "garbage", "frame (x.py:1) notanumber"]).samples == 0
