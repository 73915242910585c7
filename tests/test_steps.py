"""Every step kind, against the real kernel."""
import errno
import os
import socket

import pytest

import sakura_uring as su
from sakura_uring import Chain


def test_nop(any_ring):
    c = Chain()
    h = c.nop()
    r = any_ring.run(c)
    assert r.ok and r[h].res == 0 and r[h].error is None


def test_openat_read_close(any_ring, data_file):
    c = Chain()
    f = c.openat(data_file)
    d = c.read(f, 4096)
    c.close(f)
    r = any_ring.run(c)
    assert r.ok
    assert r[f].res == 0                       # openat_direct: 0, the slot holds the file
    assert r[d].res == 4096 and r[d].data == data_file.read_bytes()
    assert r.data(d) == data_file.read_bytes()


def test_read_at_offset_and_plain_fd(ring, data_file):
    fd = os.open(data_file, os.O_RDONLY)
    try:
        c = Chain()
        d = c.read(fd, 100, offset=1000)
        assert ring.run(c)[d].data == data_file.read_bytes()[1000:1100]
    finally:
        os.close(fd)


def test_openat_plain_fd(ring, data_file):
    c = Chain()
    h = c.openat(data_file, direct=False)
    fd = ring.run(c)[h].res
    try:
        assert fd >= 0 and os.read(fd, 10) == data_file.read_bytes()[:10]
    finally:
        os.close(fd)


def test_write_fsync_then_read_back(any_ring, tmp_path):
    p = tmp_path / "out"
    payload = os.urandom(3000)
    c = Chain()
    f = c.openat(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    w = c.write(f, payload)
    c.fsync(f)
    c.close(f)
    r = any_ring.run(c)
    assert r.ok and r[w].res == 3000
    assert p.read_bytes() == payload
    assert (p.stat().st_mode & 0o777) == 0o600


def test_large_write_is_pinned_not_copied_into_arena(ring, tmp_path):
    p = tmp_path / "big"
    payload = os.urandom(300_000)
    c = Chain()
    f = c.openat(p, os.O_WRONLY | os.O_CREAT, 0o644)
    c.write(f, payload)
    c.close(f)
    assert ring.run(c).ok and p.read_bytes() == payload


def test_read_longer_than_a_pool_buffer(tmp_path):
    p = tmp_path / "big"
    payload = os.urandom(200_000)
    p.write_bytes(payload)
    with su.Ring(16, buffer_size=4096) as ring:
        c = Chain()
        f = c.openat(p)
        d = c.read(f, 200_000)
        c.close(f)
        r = ring.run(c)
        assert r.ok and r[d].data == payload
        assert ring.free_buffers == ring.buffers


def test_read_to_write_handle_copies_in_kernel(any_ring, data_file, tmp_path):
    dst = tmp_path / "copy"
    c = Chain()
    src = c.openat(data_file)
    d = c.read(src, 4096)
    out = c.openat(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    c.write(out, d)
    c.close(src)
    c.close(out)
    assert any_ring.run(c).ok
    assert dst.read_bytes() == data_file.read_bytes()


def test_recv_send_socketpair(any_ring):
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"hello sakura")
        c = Chain()
        m = c.recv(a, 12, waitall=True)
        c.send(a, m)
        r = any_ring.run(c)
        assert r.ok and r[m].data == b"hello sakura"
        assert b.recv(100) == b"hello sakura"


def test_send_bytes(ring):
    a, b = socket.socketpair()
    with a, b:
        c = Chain()
        s = c.send(a, b"xyz")
        assert ring.run(c)[s].res == 3 and b.recv(10) == b"xyz"


def test_accept_recv_send_close_direct(any_ring):
    with socket.create_server(("127.0.0.1", 0)) as srv:
        cl = socket.create_connection(srv.getsockname())
        with cl:
            cl.sendall(b"ping")
            c = Chain()
            conn = c.accept(srv)
            assert isinstance(conn, su.Fixed)
            m = c.recv(conn, 4, waitall=True)
            c.send(conn, m)
            c.close(conn)
            r = any_ring.run(c)
            assert r.ok, r.steps
            assert cl.recv(10) == b"ping"
            assert cl.recv(10) == b""              # the server side was closed


def test_accept_plain_fd(ring):
    with socket.create_server(("127.0.0.1", 0)) as srv:
        cl = socket.create_connection(srv.getsockname())
        with cl:
            c = Chain()
            h = c.accept(srv, direct=False)
            fd = ring.run(c)[h].res
            with socket.socket(fileno=fd) as conn:
                conn.sendall(b"ok")
                assert cl.recv(2) == b"ok"


def test_socket_connect_send_direct(any_ring):
    with socket.create_server(("127.0.0.1", 0)) as srv:
        c = Chain()
        s = c.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect(s, srv.getsockname())
        c.send(s, b"from a direct socket")
        c.close(s)
        r = any_ring.run(c)
        assert r.ok, r.steps
        conn, _ = srv.accept()
        with conn:
            assert conn.recv(100) == b"from a direct socket"


def test_connect_refused_reports_errno(ring):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()   # nothing listens there now
    c = Chain()
    s = c.socket()
    k = c.connect(s, ("127.0.0.1", port))
    c.close(s)
    r = ring.run(c)
    assert r[k].error.errno == errno.ECONNREFUSED
    assert r.failed_step.op == "connect"


def test_connect_unix(ring, tmp_path):
    path = str(tmp_path / "sock")
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen()
        c = Chain()
        s = c.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(s, path)
        c.send(s, b"unix")
        c.close(s)
        assert ring.run(c).ok
        conn, _ = srv.accept()
        with conn:
            assert conn.recv(10) == b"unix"


def test_statx(any_ring, data_file):
    c = Chain()
    h = c.statx(data_file)
    st = any_ring.run(c)[h].stat
    real = os.stat(data_file)
    assert st.size == real.st_size == 4096
    assert st.mode == real.st_mode and st.ino == real.st_ino
    assert st.mtime_ns == real.st_mtime_ns


def test_statx_missing(ring, tmp_path):
    c = Chain()
    h = c.statx(tmp_path / "nope")
    r = ring.run(c)
    assert r[h].error.errno == errno.ENOENT and r[h].stat is None


def test_splice_file_pipe_file(any_ring, data_file, tmp_path):
    dst = tmp_path / "spliced"
    pr, pw = os.pipe()
    try:
        c = Chain()
        fin = c.openat(data_file)
        fout = c.openat(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        c.splice(fin, 0, pw, -1, 4096)
        c.splice(pr, -1, fout, 0, 4096)
        c.close(fin)
        c.close(fout)
        r = any_ring.run(c)
        assert r.ok, r.steps
        assert dst.read_bytes() == data_file.read_bytes()
    finally:
        os.close(pr)
        os.close(pw)


def test_by_number_socket_bind_listen_install(any_ring):
    # bind/listen/install_fd are newer than liburing 2.3: laid by opcode number
    c = Chain()
    s = c.socket()
    c.bind(s, ("127.0.0.1", 0))
    c.listen(s, 8)
    inst = c.install_fd(s)
    c.close(s)
    r = any_ring.run(c)
    assert r.ok, r.steps
    with socket.socket(fileno=r[inst].res) as ls:
        host, port = ls.getsockname()
        assert host == "127.0.0.1" and port > 0
        with socket.create_connection((host, port)) as cl:
            conn, _ = ls.accept()
            conn.close()
            assert cl is not None


def test_by_number_ftruncate(ring, tmp_path):
    p = tmp_path / "t"
    p.write_bytes(b"x" * 1000)
    c = Chain()
    f = c.openat(p, os.O_WRONLY)
    c.ftruncate(f, 123)
    c.close(f)
    assert ring.run(c).ok and p.stat().st_size == 123


def test_registered_ring_file(ring, data_file):
    with open(data_file, "rb") as fh:
        h = ring.register_file(fh)
        assert ring.free_slots == ring.slots - 1
        c = Chain()
        d = c.read(h, 50, offset=10)
        assert ring.run(c)[d].data == data_file.read_bytes()[10:60]
        ring.unregister_file(h)
        assert ring.free_slots == ring.slots
        c2 = Chain()
        with pytest.raises(su.ChainError, match="no longer registered"):
            c2.read(h, 50)
        assert len(c2) == 0
