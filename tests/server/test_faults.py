"""`tandem serve` under bad clients (issue: hostile input, part 3), on loopback and bounded in
count and time: oversized and truncated bodies, garbage instead of HTTP, a client that sends
its headers a byte at a time (the header timeout frees it), 256 idle connections, a client
that vanishes mid-stream (test_openai.py), a flood past the queue (test_openai.py). After
each, the server answers a normal request, and its memory is back near where it started."""

import socket
import time

KEY = {"Authorization": "Bearer sesame"}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def still_answers(s):
    status, body, _ = s.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2}, headers=KEY)
    assert status == 200, body


def raw(s, data, wait=5.0):
    """Send `data` on a fresh connection; the bytes the server sent back until it closed."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=wait) as c:
        c.sendall(data)
        got = b""
        try:
            while chunk := c.recv(65536):
                got += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return got


def test_an_oversized_body_is_refused_and_the_server_goes_on(guarded):
    big = b'{"prompt": "' + b"a" * 200_000 + b'"}'
    status, _, _ = guarded.request("POST", "/v1/completions", raw=big, headers=KEY)
    assert status == 413
    still_answers(guarded)


def test_truncated_requests_and_garbage_do_not_hurt(guarded):
    head = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sesame\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", guarded.port)) as c:
        c.sendall(head + b'{"prompt": "Hi"')  # and vanish before the rest of the body
    got = raw(guarded, b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    assert got == b"" or got.startswith(b"HTTP/1.1 400"), got[:80]
    got = raw(guarded, b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n")
    assert got == b"" or got.startswith(b"HTTP/1.1 400"), got[:80]
    still_answers(guarded)


def test_a_client_sending_a_byte_at_a_time_is_cut_off_by_the_header_timeout(guarded):
    request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"z" * 40
    t0 = time.time()
    closed = False
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as c:
        for byte in request:
            try:
                c.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            c.settimeout(0.25)
            try:
                if c.recv(1024) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
                break
            if time.time() - t0 > 8:
                break
    assert closed, "the server kept a slow client's connection past its header timeout"
    assert time.time() - t0 < 6
    still_answers(guarded)


def test_256_idle_connections_leave_the_server_answering(guarded):
    before = rss_kib(guarded.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", guarded.port)) for _ in range(256)]
    try:
        still_answers(guarded)
    finally:
        for c in idle:
            c.close()
    time.sleep(0.5)
    still_answers(guarded)
    grew = (rss_kib(guarded.proc.pid) - before) / 1024
    assert grew < 32, f"memory grew by {grew:.1f} MiB"
