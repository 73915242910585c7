"""The seed's workload end to end: wrk against nginx and the four models of
`sakura-uring httpd`, side by side in one run.

For each server (nginx-light with one worker, then threads, flexsc, link, kernel), each file
(1 KiB, 64 KiB), each connection count (1, 16, 64) and each mode (keep-alive, close): wrk for
a fixed time; requests/s, p50 and p99 latency (wrk --latency), system calls per request (a
bcc raw_syscalls counter on the server process) and CPU time per request (/proc/PID/stat of
the server, every thread included: the SQPOLL thread and io-wq workers are the process's
threads), and the ratio to nginx measured in the same run.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..resources import checkout
from ..httpd import MODELS

SERVERS = ("nginx",) + tuple(MODELS)
FILES = {"1k": 1024, "64k": 65536}
CONNS = (1, 16, 64)
MODES = ("keep-alive", "close")
NGINX_CONF = """
worker_processes 1;
daemon off;
user nobody nogroup;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 65;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {root};
    }}
}}
"""


def docroot(prefix: str, files: dict[str, int]) -> tuple[str, str]:
    """(tmp, root): a fresh document root holding random files of the given sizes, which an
    unprivileged user (nginx's worker, our models' `nobody`) can reach and read."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    os.chmod(tmp, 0o755)                     # mkdtemp makes it 0700
    root = os.path.join(tmp, "www")
    os.mkdir(root, 0o755)
    for name, size in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(size))
        os.chmod(os.path.join(root, name), 0o644)
    return tmp, root


def _free_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    import socket
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


class Started:
    """A server process; `pid` is the process that does the work."""

    def __init__(self, name: str, root: str, tmp: str):
        self.name = name
        self.port = _free_port()
        os.makedirs(tmp, exist_ok=True)
        if name == "nginx":
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            os.makedirs(tmp, exist_ok=True)
            conf = Path(tmp, "nginx.conf")
            conf.write_text(NGINX_CONF.format(tmp=tmp, port=self.port, root=root))
            Path(tmp, "body").mkdir(exist_ok=True)
            self.log = open(Path(tmp, "stderr.log"), "w")
            self.proc = subprocess.Popen([nginx, "-p", tmp, "-c", str(conf), "-e",
                                          f"{tmp}/error.log"],
                                         stdout=subprocess.DEVNULL, stderr=self.log)
        else:
            # stderr to a file: a pipe nobody reads would block the server once full
            self.log = open(Path(tmp, f"{name}.stderr.log"), "w")
            self.proc = subprocess.Popen([sys.executable, "-m", "sakura_uring.cli", "httpd",
                                          "--model", name, "--root", root, "--port",
                                          str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=self.log)
        if name == "nginx":
            _wait_port(self.port, self.proc, name)
        else:                              # it says "serving" once it accepts connections
            end = time.monotonic() + 60
            while "serving" not in Path(self.log.name).read_text():
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"{name} did not start: {Path(self.log.name).read_text()}")
                time.sleep(0.05)
        self.pid = self._worker() if name == "nginx" else self.proc.pid

    def _worker(self) -> int:
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(kids[0]) if kids else self.proc.pid

    def cpu_seconds(self) -> float:
        f = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM if self.name != "nginx" else signal.SIGQUIT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def errors(self) -> str:
        return Path(self.log.name).read_text()[-2000:]


def wrk(port: int, path: str, conns: int, mode: str, seconds: float) -> dict:
    cmd = ["wrk", "-t", "1" if conns < 2 else "2", "-c", str(conns), "-d", f"{int(seconds)}s",
           "--latency", "--timeout", "5s"]
    if mode == "close":
        cmd += ["-H", "Connection: close"]
    done = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"], capture_output=True,
                          text=True, timeout=seconds + 60)
    out = done.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk failed: {done.stderr.strip() or out.strip()}")
    rps = float(m.group(1))
    count = re.search(r"(\d+) requests in", out)
    if count is None:
        raise RuntimeError(f"wrk printed no request count: {out.strip()[-300:]}")
    total = int(count.group(1))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = {m.group(1): _us(m.group(2), m.group(3))
           for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    return dict(rps=rps, requests=total, p50_us=lat.get("50"), p99_us=lat.get("99"),
                errors=(sum(int(x) for x in errs.groups()) if errs else 0)
                + (int(non2xx.group(1)) if non2xx else 0))


def _us(value: str, unit: str) -> float:
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def _counter(pid):
    try:
        from ..trace import SyscallCounter
        return SyscallCounter(pid)
    except Exception:
        return None


def run(args) -> dict:
    seconds = 10 if args.full else max(1, int(args.seconds))     # wrk takes whole seconds
    servers = args.servers or SERVERS
    tmp, root = docroot("sakura-http-", {f"{name}.bin": size for name, size in FILES.items()})
    cells = [(f, c, m) for f in FILES for m in MODES for c in CONNS]
    total = len(servers) * len(cells)
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"HTTP: {', '.join(servers)} x files {list(FILES)} x connections {list(CONNS)} x "
        f"{list(MODES)}, wrk {seconds} s each ({total} runs, ~{int(total * (seconds + 0.6))} s)")
    rows, k = [], 0
    try:
        for name in servers:
            srv = Started(name, root, os.path.join(tmp, name) if name == "nginx" else tmp)
            try:
                counter = _counter(srv.pid)
                wrk(srv.port, "/1k.bin", 16, "keep-alive", 1)              # warm up
                for fname, conns, mode in cells:
                    k += 1
                    if counter:
                        counter.reset()
                    cpu0 = srv.cpu_seconds()
                    r = wrk(srv.port, f"/{fname}.bin", conns, mode, seconds)
                    cpu = srv.cpu_seconds() - cpu0
                    calls = counter.stop() if counter else None
                    n = max(1, r["requests"])
                    row = dict(server=name, file=fname, conns=conns, mode=mode, **r,
                               syscalls_per_request=(sum(calls.values()) / n if calls is not None
                                                     else None),
                               cpu_us_per_request=cpu * 1e6 / n)
                    rows.append(row)
                    log(f"  [{k:>2}/{total}] {name:<8} {fname:>4} {mode:<10} c={conns:<3} "
                        f"{r['rps']:>9.0f} req/s  p50 {r['p50_us'] or 0:>7.0f} us  "
                        f"syscalls/req {row['syscalls_per_request'] or 0:6.3f}  "
                        f"cpu {row['cpu_us_per_request']:6.1f} us/req"
                        + (f"  ERRORS {r['errors']}" if r["errors"] else ""))
                if counter:
                    counter.close()
            finally:
                srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = {(r["file"], r["conns"], r["mode"]): r["rps"] for r in rows if r["server"] == "nginx"}
    for r in rows:
        b = base.get((r["file"], r["conns"], r["mode"]))
        r["vs_nginx"] = r["rps"] / b if b else None
    return dict(seconds=seconds, kernel=os.uname().release, rows=rows,
                rounds=target_rounds(servers, log, 3 if not args.full else 5))


TARGET_CELL = ("1k", 64, "keep-alive")


def target_rounds(servers, log, rounds: int, seconds: int = 2) -> dict:
    """The cell the targets are about (1 KiB, keep-alive, 64 connections), measured again
    with every server up at once and the servers taking turns, round after round: one
    server's luck with the noisy machine does not decide a target. Median req/s."""
    tmp, root = docroot("sakura-rounds-", {"1k.bin": 1024})
    started: dict = {}
    got: dict[str, list] = {name: [] for name in servers}
    log(f"targets: {'/'.join(servers)} at 1 KiB keep-alive 64 connections, {rounds} rounds of "
        f"{seconds} s, servers taking turns")
    try:
        for name in servers:
            started[name] = Started(name, root, os.path.join(tmp, name) if name == "nginx" else tmp)
        for srv in started.values():
            wrk(srv.port, "/1k.bin", 64, "keep-alive", 1)
        for rnd in range(rounds):
            order = list(started.items())
            for name, srv in (order if rnd % 2 == 0 else order[::-1]):
                # the last server's SQPOLL thread polls on for up to 1 s after its turn:
                # let it fall asleep so that it takes no CPU from this one
                time.sleep(1.2)
                got[name].append(wrk(srv.port, "/1k.bin", 64, "keep-alive", seconds)["rps"])
            log(f"  round {rnd + 1}/{rounds}: " + ", ".join(f"{n} {got[n][-1]:.0f}" for n in got))
    finally:
        for srv in started.values():
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {name: statistics.median(v) for name, v in got.items() if v}


def table(result: dict, markdown: bool) -> str:
    hdr = ("server", "file", "mode", "conns", "req/s", "p50 us", "p99 us", "syscalls/req",
           "CPU us/req", "vs nginx")
    lines = []
    if markdown:
        lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    else:
        lines.append(f"{'server':<8}{'file':>5} {'mode':<11}{'conns':>5}{'req/s':>10}{'p50us':>9}"
                     f"{'p99us':>9}{'sys/req':>9}{'cpu us':>8}{'vs nginx':>9}")
    for r in sorted(result["rows"], key=lambda r: (r["file"], r["mode"], r["conns"],
                                                  SERVERS.index(r["server"]))):
        sc = "n/a" if r["syscalls_per_request"] is None else f"{r['syscalls_per_request']:.3f}"
        vs = "" if r["vs_nginx"] is None else f"{r['vs_nginx']:.2f}x"
        cells = (r["server"], r["file"], r["mode"], str(r["conns"]), f"{r['rps']:.0f}",
                 f"{r['p50_us'] or 0:.0f}", f"{r['p99_us'] or 0:.0f}", sc,
                 f"{r['cpu_us_per_request']:.1f}", vs + (f" ({r['errors']} errors)" if r["errors"] else ""))
        lines.append(("| " + " | ".join(cells) + " |") if markdown else
                     f"{cells[0]:<8}{cells[1]:>5} {cells[2]:<11}{cells[3]:>5}{cells[4]:>10}"
                     f"{cells[5]:>9}{cells[6]:>9}{cells[7]:>9}{cells[8]:>8}{cells[9]:>9}")
    return "\n".join(lines)


def targets(result: dict) -> list[str]:
    """The issue's targets, each met or missed by how much."""
    rows = {(r["server"], r["file"], r["conns"], r["mode"]): r for r in result["rows"]}
    out = []

    def best(server):   # the 1 KiB keep-alive cell with the most connections measured
        cands = [rows.get((server, "1k", c, "keep-alive")) for c in CONNS]
        cands = [c for c in cands if c]
        return max(cands, key=lambda r: r["conns"]) if cands else None
    n, d, c, b = best("nginx"), best("kernel"), best("link"), best("flexsc")
    med = result.get("rounds") or {}
    if med:       # the turn-taking rounds decide the req/s targets
        n, d, c, b = [dict(r, rps=med.get(k, r["rps"])) if r else None
                      for r, k in ((n, "nginx"), (d, "kernel"), (c, "link"), (b, "flexsc"))]
    if n and d:
        ratio = d["rps"] / n["rps"]
        out.append(f"(d) kernel >= nginx, 1 KiB keep-alive, {d['conns']} connections"
                   f"{' (median of the rounds)' if med else ''}: "
                   f"{d['rps']:.0f} vs {n['rps']:.0f} req/s = {ratio:.2f}x -> "
                   + ("met" if ratio >= 1 else f"MISSED by {(1 - ratio) * 100:.0f}%"))
    if n and c:
        ratio = c["rps"] / n["rps"]
        out.append(f"(c) link >= nginx / 2: {ratio:.2f}x of nginx -> "
                   + ("met" if ratio >= 0.5 else f"MISSED (needs {0.5 / ratio:.1f}x more)"))
    if d and c and b:
        ok = d["rps"] > c["rps"] > b["rps"]
        out.append(f"ordering (d) > (c) > (b): {d['rps']:.0f} > {c['rps']:.0f} > {b['rps']:.0f} "
                   f"-> {'met' if ok else 'MISSED'}")
    if d and d["syscalls_per_request"] is not None:
        s = d["syscalls_per_request"]
        out.append(f"(d) system calls per request < 0.1: {s:.3f} -> "
                   + ("met" if s < 0.1 else "MISSED"))
    return out


def plots(result: dict, outdir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    for fname in FILES:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
        for ax, mode in zip(axes, MODES):
            for server in SERVERS:
                pts = sorted((r["conns"], r["rps"]) for r in result["rows"]
                             if r["server"] == server and r["file"] == fname and r["mode"] == mode)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=server)
            ax.set_xscale("log", base=2)
            ax.set_xticks(CONNS, [str(c) for c in CONNS])
            ax.set_xlabel("connections")
            ax.set_ylabel("requests/s")
            ax.set_title(f"{fname} file, {mode}")
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.tight_layout()
        p = outdir / f"http-{fname}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made.append(p)
    return made


def main(args) -> int:
    if shutil.which("wrk") is None or not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")):
        print("the HTTP benchmark needs wrk and nginx-light: `make setup` installs them",
              file=sys.stderr)
        return 1
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(table(result, args.markdown))
    if result.get("rounds"):
        print("\nturn-taking rounds, 1 KiB keep-alive 64 connections, median req/s: "
              + ", ".join(f"{k} {v:.0f}" for k, v in result["rounds"].items()))
    print()
    for line in targets(result):
        print(("* " if args.markdown else "") + line)
    if args.write:
        root = checkout()
        if root is None:
            print("--write updates a checkout's docs/: run it from a source checkout",
                  file=sys.stderr)
            return 2
        docs = root / "docs"
        made = plots(result, docs)
        write_results(result, docs / "results.md", made)
        print(f"\nwrote docs/results.md and {', '.join(p.name for p in made)}", file=sys.stderr)
    return 0


MARK_BEGIN = "<!-- http: generated by python -m sakura_uring.bench http --write -->"
MARK_END = "<!-- http: end -->"


def write_results(result: dict, path: Path, pngs: list[Path]) -> None:
    section = [MARK_BEGIN, "## HTTP: wrk against nginx and the four models", "",
               "Command (`make demo` runs it; `--full` for 10 s per run):", "",
               "```", ".venv/bin/python -m sakura_uring.bench http --write", "```", "",
               f"Kernel {result['kernel']}, wrk {result['seconds']} s per run, 127.0.0.1, "
               f"{time.strftime('%Y-%m-%d')}. One run of every server, side by side.", "",
               table(result, True), ""]
    if result.get("rounds"):
        section += ["The target cell (1 KiB, keep-alive, 64 connections) again, every server up "
                    "at once and taking turns, 2 s per turn, median of the rounds:", "",
                    "| server | req/s | vs nginx |", "|---|---|---|"]
        base = result["rounds"].get("nginx")
        section += [f"| {k} | {v:.0f} | {v / base:.2f}x |" if base else f"| {k} | {v:.0f} | |"
                    for k, v in result["rounds"].items()]
        section += [""]
    section += ["Targets:", ""]
    section += [f"* {t}" for t in targets(result)]
    section += [""] + [f"![{p.stem}]({p.name})" for p in pngs] + ["", MARK_END]
    text = path.read_text() if path.exists() else "# Results\n"
    if MARK_BEGIN in text and MARK_END in text:
        a, b = text.index(MARK_BEGIN), text.index(MARK_END) + len(MARK_END)
        text = text[:a] + "\n".join(section) + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n"
    path.write_text(text)


def soak(args) -> int:
    """Each model under 256 keep-alive connections for `seconds` (default 60): no failed
    request, and no growth in open fds or resident memory after a warm-up minute-slice."""
    servers = args.servers or tuple(MODELS)
    tmp, root = docroot("sakura-soak-", {"1k.bin": 1024})
    rows, failed = [], False
    try:
        for name in servers:
            srv = Started(name, root, os.path.join(tmp, name) if name == "nginx" else tmp)
            try:
                wrk(srv.port, "/1k.bin", 256, "keep-alive", 3)          # warm up: caches, slots
                time.sleep(0.5)
                fds0, rss0 = srv.fds(), srv.rss_kb()
                r = wrk(srv.port, "/1k.bin", 256, "keep-alive", args.seconds)
                time.sleep(0.5)                                         # connections wind down
                fds1, rss1 = srv.fds(), srv.rss_kb()
            finally:
                srv.stop()
            ok = r["errors"] == 0 and fds1 <= fds0 + 2 and rss1 <= rss0 * 1.10 + 2048
            failed |= not ok
            p99 = r.get("p99_us")
            rows.append((name, r["requests"], r["errors"], p99, fds0, fds1, rss0, rss1, ok))
            print(f"  {name:<8} {r['requests']:>9} requests, {r['errors']} failed, p99 {p99} us; "
                  f"fds {fds0} -> {fds1}; RSS {rss0} -> {rss1} KiB  {'ok' if ok else 'FAILED'}",
                  file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("| server | requests | failed | p99 µs | fds before → after | RSS KiB before → after | |")
    print("|---|---|---|---|---|---|---|")
    for name, n, e, p99, f0, f1, r0, r1, ok in rows:
        print(f"| {name} | {n} | {e} | {p99} | {f0} → {f1} | {r0} → {r1} | "
              f"{'ok' if ok else 'FAILED'} |")
    return 1 if failed else 0
