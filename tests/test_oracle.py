"""Hypothesis: random chains give the same results as the same steps done with os.*."""
import errno
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sakura_uring as su
from sakura_uring import Chain

FILES = ["a", "b", "missing"]

step = st.one_of(
    st.tuples(st.just("read"), st.integers(0, 3000), st.integers(0, 2500)),
    st.tuples(st.just("write"), st.binary(min_size=0, max_size=300), st.integers(0, 2000)),
    st.tuples(st.just("statx")),
    st.tuples(st.just("nop")),
)
chain_spec = st.tuples(st.sampled_from(FILES), st.booleans(), st.lists(step, max_size=6))


def _oracle(root, name, writable, steps):
    """Do the same thing with os.* and a soft link's semantics as documented in
    docs/design.md ("How steps are linked"); return per-step results:
      - a read is like os.read: short or not, the chain goes on (it is hard-linked);
      - any other step that fails (or writes short) cancels everything after it, except
        that the step just before the closing close is hard-linked, so the close runs;
      - if the open fails, everything is cancelled (there is nothing to close)."""
    out = []
    path = os.path.join(root, name)
    try:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    except OSError as e:
        return [("openat", -e.errno)] + [(s[0], -errno.ECANCELED) for s in steps] + \
               [("close", -errno.ECANCELED)]
    out.append(("openat", 0))
    broken = False
    try:
        for i, s in enumerate(steps):
            if broken:
                out.append((s[0], -errno.ECANCELED))
                continue
            last = i == len(steps) - 1     # hard-linked into the close
            failed = False
            try:
                if s[0] == "read":
                    out.append(("read", os.pread(fd, s[1], s[2])))
                elif s[0] == "write":
                    n = os.pwrite(fd, s[1], s[2])
                    out.append(("write", n))
                    failed = n < len(s[1])
                elif s[0] == "statx":
                    out.append(("statx", os.stat(path).st_size))
                else:
                    out.append(("nop", 0))
            except OSError as e:
                out.append((s[0], -e.errno))
                failed = s[0] != "read"
            broken = failed and not last
    finally:
        os.close(fd)
    out.append(("close", -errno.ECANCELED if broken else 0))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=chain_spec)
def test_chains_match_os_oracle(tmp_path_factory, spec):
    name, writable, steps = spec
    root_k = tmp_path_factory.mktemp("k")
    root_o = tmp_path_factory.mktemp("o")
    seed = os.urandom(2000)
    for root in (root_k, root_o):
        for f in ("a", "b"):
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(seed)
    want = _oracle(str(root_o), name, writable, steps)

    c = Chain()
    path = os.path.join(root_k, name)
    f = c.openat(path, os.O_RDWR if writable else os.O_RDONLY)
    for s in steps:
        if s[0] == "read":
            c.read(f, s[1], offset=s[2])
        elif s[0] == "write":
            c.write(f, s[1], offset=s[2])
        elif s[0] == "statx":
            c.statx(path)
        else:
            c.nop()
    c.close(f)
    with su.Ring(16) as ring:
        r = ring.run(c)
        got = []
        for sr in r:
            if sr.res < 0:
                got.append((sr.op, sr.res))
            elif sr.op == "read":
                got.append(("read", sr.data))
            elif sr.op == "statx":
                got.append(("statx", sr.stat.size))
            else:
                got.append((sr.op, sr.res))
        assert ring.free_slots == ring.slots
    assert got == want
    for f in ("a", "b"):
        with open(os.path.join(root_k, f), "rb") as k, open(os.path.join(root_o, f), "rb") as o:
            assert k.read() == o.read()
