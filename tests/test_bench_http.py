"""The HTTP benchmark's machinery: nginx and a model started the way `make demo` starts
them, wrk's output read, system calls and CPU counted, the results file written."""
import os
import shutil

import pytest

from sakura_uring.bench import http as bench

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None or shutil.which("nginx") is None
                                and not os.path.exists("/usr/sbin/nginx"),
                                reason="needs wrk and nginx-light (make setup installs them)")


@pytest.fixture
def docroot():
    # as make demo makes it: reachable by nginx's worker and our models (both nobody)
    tmp, root = bench.docroot("sakura-bench-test-", {"1k.bin": 1024})
    yield root
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("server", ["nginx", "kernel"])
def test_a_server_under_wrk(server, docroot, tmp_path):
    srv = bench.Started(server, str(docroot), str(tmp_path / "run"))
    try:
        counter = bench._counter(srv.pid)
        cpu0 = srv.cpu_seconds()
        r = bench.wrk(srv.port, "/1k.bin", 4, "keep-alive", 1)
        cpu = srv.cpu_seconds() - cpu0
        calls = counter.stop()
        counter.close()
        assert r["rps"] > 100 and r["errors"] == 0 and r["requests"] > 100
        assert r["p50_us"] and r["p99_us"] >= r["p50_us"]
        assert cpu > 0 and sum(calls.values()) > 0
        if server == "kernel":       # the handler runs in the kernel: nginx makes 8 per request
            assert sum(calls.values()) / r["requests"] < 1.0
        closed = bench.wrk(srv.port, "/1k.bin", 2, "close", 1)
        assert closed["errors"] == 0 and closed["requests"] > 50
    finally:
        srv.stop()


def test_results_section_is_replaced_not_appended(tmp_path):
    rows = [dict(server=s, file="1k", conns=64, mode="keep-alive", rps=r, requests=1000,
                 p50_us=100.0, p99_us=200.0, errors=0, syscalls_per_request=sc,
                 cpu_us_per_request=10.0, vs_nginx=r / 40000)
            for s, r, sc in [("nginx", 40000, 8.0), ("flexsc", 4000, 10.0),
                             ("link", 8000, 4.0), ("kernel", 60000, 0.05)]]
    result = dict(seconds=1, kernel="x", rows=rows)
    path = tmp_path / "results.md"
    path.write_text("# Results\n\nearlier text\n")
    bench.write_results(result, path, [])
    bench.write_results(result, path, [])
    text = path.read_text()
    assert text.count(bench.MARK_BEGIN) == 1 and "earlier text" in text
    t = bench.targets(result)
    assert any("1.50x -> met" in line for line in t)
    assert any("MISSED" in line for line in t)       # link at 0.2x of nginx
