"""2,000 mutated requests per HTTP model: every answer is a well-formed response with a
status we know, nothing outside the root leaks, and afterwards valid requests are still
served with no fd or memory growth."""
import http.client
import random
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sakura_uring.bench.http import docroot
from sakura_uring.httpd import MODELS, Server
from sakura_uring.httpd.http import REASONS

from helpers import http_exchange, make_docroot, open_fds

N = 2000
SEEDS = [
    b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    b"GET /sub/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
    b"GET http://x/a%20b.txt?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close, TE\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\nGET /empty HTTP/1.1\r\nHost: x\r\n\r\n",
]
ODD = [b"\r", b"\n", b"\0", b" ", b":", b"%", b"\t", b"\xff", b"/", b".", b",", b"0",
       b"\r\n", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"Host: y\r\n",
       b"../", b"%2e%2e/", b"\r\n\r\n"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randrange(len(b) + 1)
        if op == 0 and b:                                   # flip a byte
            b[min(at, len(b) - 1)] = rng.randrange(256)
        elif op == 1:                                       # insert something odd
            b[at:at] = rng.choice(ODD)
        elif op == 2 and b:                                 # drop a run
            del b[at:at + rng.randint(1, 8)]
        elif op == 3:                                       # repeat a slice
            j = rng.randrange(len(b) + 1)
            lo, hi = sorted((at, j))
            b[hi:hi] = b[lo:hi] * rng.randint(1, 3)
        elif op == 4:                                       # cut it short
            del b[at:]
        else:                                               # a long run
            b[at:at] = bytes([rng.randrange(32, 127)]) * rng.choice((100, 1100, 5000))
    return bytes(b)


def exchange(port: int, data: bytes) -> bytes:
    return http_exchange(port, data, half_close=True)[0]


STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ([^\r\n]*)\r\n")


def check(out: bytes) -> None:
    assert b"root:" not in out and b"outside the root" not in out
    for m in STATUS.finditer(out):
        code = int(m.group(1))
        assert code in REASONS and m.group(2) == REASONS[code].encode(), out[:200]
    if out:
        assert STATUS.match(out), out[:200]


@pytest.fixture(scope="module")
def root():
    tmp, www = docroot("sakura-fuzz-", {})
    make_docroot(Path(www))
    yield Path(www)
    shutil.rmtree(tmp, ignore_errors=True)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize("model", list(MODELS))
def test_mutated_requests(model, root):
    rng = random.Random(f"sakura-{model}")
    cases = [mutate(rng, rng.choice(SEEDS)) for _ in range(N)]
    with Server(model, root) as srv:
        def valid():
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            c.request("GET", "/index.html")
            r = c.getresponse()
            assert (r.status, r.read()) == (200, b"<h1>sakura</h1>\n")
            c.close()

        with ThreadPoolExecutor(8) as pool:                 # warm up
            list(pool.map(lambda d: exchange(srv.port, d), cases[:200]))
        valid()
        fds0, rss0 = len(open_fds()), _rss_kb()
        with ThreadPoolExecutor(8) as pool:
            for out in pool.map(lambda d: exchange(srv.port, d), cases):
                check(out)
        valid()
        for _ in range(100):                                # the last ones may be closing
            if len(open_fds()) <= fds0 + 4 and len(srv.conns) == 0:
                break
            time.sleep(0.05)
        assert len(open_fds()) <= fds0 + 4
        assert len(srv.conns) == 0
        assert _rss_kb() - rss0 < 20_000, (rss0, _rss_kb())
