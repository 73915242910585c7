"""Read many files with one chain: a Param stands for the path, the native layer binds
each file's path into the chain when it is laid, and ring.map runs the chain for every
path in one native loop (no Python per file).

    python examples/many_files.py /etc/hostname /etc/os-release ...
"""
import sys

import sakura_uring as su

chain = su.Chain()
path = chain.param("path")
f = chain.openat(path)
data = chain.read(f, 4096)
chain.close(f)

paths = sys.argv[1:] or ["/etc/hostname"]
with su.Ring(sqpoll=True) as ring:
    # one file at a time: a prepared chain is one native call per run
    with ring.prepare(chain) as cat:
        first = cat.run(path=paths[0])
        print(f"{paths[0]}: {len(first[data].data)} bytes (prepared run)", file=sys.stderr)
    # all of them: one call, results in order; a missing file fails only its own row
    results = ring.map(chain, paths)
    for p, got in zip(paths, results.data(data)):
        print(f"{p}: {'missing' if got is None else f'{len(got)} bytes'}")
    for i, r in results.failed():
        print(f"row {i} failed at {r.failed_step.op}: {r.failed_step.error}", file=sys.stderr)
