"""Files that change while they are served, in every model: a swap for a symlink never
leaves the root, Content-Length always equals the bytes sent, nothing is cached, large
files stream in bounded chunks."""
import http.client
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from sakura_uring.bench.http import docroot, wrk
from sakura_uring.httpd import MODELS, Server

BIG = 5_000_000


@pytest.fixture(scope="module")
def root():
    tmp, www = docroot("sakura-files-", {"big5m.bin": BIG})
    yield Path(www)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module", params=list(MODELS))
def srv(request, root):
    with Server(request.param, root) as s:
        yield s


def fetch(srv, path):
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read(), r.getheader("Content-Length")
    finally:
        c.close()


def swap(link: Path, target: str) -> None:
    """Replace `link` atomically by a symlink to target (ln -s target tmp && mv -T tmp link)."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def test_a_file_swapped_for_a_symlink_out_of_the_root(srv, root):
    f = root / f"a-{srv.model}.txt"
    f.write_bytes(b"first")
    assert fetch(srv, f"/{f.name}")[:2] == (200, b"first")
    swap(f, "/etc/passwd")
    status, body, _ = fetch(srv, f"/{f.name}")
    assert status == 404 and b"root:" not in body


def test_a_directory_swapped_for_a_symlink_out_of_the_root(srv, root):
    d = root / f"d-{srv.model}"
    d.mkdir()
    (d / "passwd").write_bytes(b"mine")
    assert fetch(srv, f"/{d.name}/passwd")[:2] == (200, b"mine")
    shutil.rmtree(d)
    swap(d, "/etc")
    status, body, _ = fetch(srv, f"/{d.name}/passwd")
    assert status == 404 and b"root:" not in body


def test_every_change_is_seen_at_once(srv, root):
    f = root / f"c-{srv.model}.txt"
    assert fetch(srv, f"/{f.name}")[0] == 404            # created after a 404: then 200
    f.write_bytes(b"x" * 100)
    assert fetch(srv, f"/{f.name}")[:3] == (200, b"x" * 100, "100")
    f.write_bytes(b"y" * 5000)                          # grown
    assert fetch(srv, f"/{f.name}")[:3] == (200, b"y" * 5000, "5000")
    f.write_bytes(b"z" * 10)                            # shrunk
    assert fetch(srv, f"/{f.name}")[:3] == (200, b"z" * 10, "10")
    f.unlink()                                          # deleted
    assert fetch(srv, f"/{f.name}")[0] == 404
    os.mkfifo(f)                                        # replaced by a FIFO: no hang
    t0 = time.monotonic()
    assert fetch(srv, f"/{f.name}")[0] == 404
    assert time.monotonic() - t0 < 2
    f.unlink()


# the kernel handler's chunk (KernelRing buffer_size 65536 - BODY_OFF 8192): a file shorter
# than it goes out after one read, one as long or longer in chunks (both measured by the
# inode the first read used, sk_file_size)
CHUNK = 57344


@pytest.mark.parametrize("size", [1, 4095, 4096, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7])
def test_every_size_arrives_whole_with_its_length(srv, root, size):
    f = root / f"s{size}-{srv.model}.bin"
    data = os.urandom(size)
    f.write_bytes(data)
    try:
        assert fetch(srv, f"/{f.name}") == (200, data, str(size))
        c = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        try:                                       # HEAD: the length alone
            c.request("HEAD", f"/{f.name}")
            r = c.getresponse()
            assert (r.status, r.getheader("Content-Length"), r.read()) == (200, str(size), b"")
        finally:
            c.close()
    finally:
        f.unlink()


def test_a_file_truncated_while_it_is_sent_is_never_padded(srv, root):
    """The length was announced: when the file shrinks mid-response the connection ends
    short (the client sees it), it never carries bytes of anything else."""
    f = root / f"t-{srv.model}.bin"
    with open(f, "wb") as out:
        out.truncate(64 << 20)                          # sparse: zeros
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    c.request("GET", f"/{f.name}")
    r = c.getresponse()
    assert int(r.getheader("Content-Length")) == 64 << 20
    got = r.read(65536)
    os.truncate(f, 100_000)
    try:
        while chunk := r.read(1 << 20):
            got += chunk
    except http.client.IncompleteRead as e:
        got += e.partial
    c.close()
    assert len(got) < 64 << 20 and set(got) <= {0}
    f.unlink()


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_large_file_arrives_whole_under_load_in_bounded_memory(srv, root):
    want = (root / "big5m.bin").read_bytes()
    assert fetch(srv, "/big5m.bin")[1] == want          # warm: rings, buffers
    rss0 = _rss_kb()
    load = {}
    t = threading.Thread(target=lambda: load.update(wrk(srv.port, "/big5m.bin", 64,
                                                        "keep-alive", 3)))
    t.start()
    try:
        for _ in range(3):
            status, body, length = fetch(srv, "/big5m.bin")
            assert status == 200 and length == str(BIG) and body == want
    finally:
        t.join()
    assert load["requests"] > 0 and load["errors"] == 0, load
    # 64 connections each holding the whole file (or twice it) would be 320+ MB
    assert _rss_kb() - rss0 < 150_000, (rss0, _rss_kb())
