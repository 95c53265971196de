from __future__ import annotations

from gateway.inspect.http import MAX_RECORDED, HttpObserver


def test_request_and_status_recorded_across_chunks() -> None:
    obs = HttpObserver()
    request = b"GET /index.html HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n\r\n"
    for i in range(0, len(request), 7):
        obs.client_data(request[i:i + 7])
    obs.server_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert obs.messages == [{"method": "GET", "path": "/index.html", "host": "shop.example", "status": "200"}]


def test_non_http_stream_records_nothing() -> None:
    obs = HttpObserver()
    obs.client_data(b"\x00\x01binary\r\n\r\nmore")
    obs.server_data(b"HTTP/1.1 200 OK\r\n\r\n")
    assert obs.messages == []


def test_recording_is_bounded() -> None:
    obs = HttpObserver()
    obs.client_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * (MAX_RECORDED + 5))
    assert len(obs.messages) == MAX_RECORDED
