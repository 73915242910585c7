"""cat FILE... through linked chains: python examples/cat.py /etc/hostname /etc/os-release"""
import os
import sys

import sakura_uring as su


def cat_chain(path):
    chain = su.Chain()
    f = chain.openat(path)
    data = chain.read(f, os.path.getsize(path))
    chain.close(f)
    return chain, data


with su.Ring(sqpoll=True) as ring:
    for path in sys.argv[1:]:
        chain, data = cat_chain(path)
        result = ring.run(chain)
        result.raise_for_error()
        sys.stdout.buffer.write(result[data].data)
