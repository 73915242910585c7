"""Booting one kernel under QEMU with the host's root shared read-only over 9p.

The guest gets a tiny initramfs (busybox-static, the kernel's own 9p and overlay
modules, an init script). Init mounts the host's / read-only, lays a tmpfs over it with
overlayfs so tests may write anywhere without touching the host, chroots there and runs
`python -m sakura_uring.matrix.inside` from this checkout's venv: the same Python, bcc,
LLVM and cffi build as on the host, and the kernel's own headers for bcc."""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .inside import MARK
from .kernels import GUEST_MODULES, Fetched, _module_closure

BOOTED = "SAKURA-MATRIX-BOOTED"
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "{booted} uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in {modules}; do insmod /modules/$m || echo "insmod $m failed"; done
mkdir -p /host /rw /newroot
fail() {{ echo "SAKURA-MATRIX-GUEST-ERROR $*"; poweroff -f; }}
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host \
  || fail "mounting the host root over 9p failed"
mount -t tmpfs -o size=75% rw /rw && mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
  || fail "overlayfs over the 9p root failed"
for d in proc sys dev; do mount --move /$d /newroot/$d; done
# a checkout under /tmp or /run (a CI clone) stays visible under the guest's own tmpfs
repo={repo}
case "$repo" in
  /tmp/*|/run/*) mkdir -p /keep && mount --bind "/newroot$repo" /keep \
                   || fail "binding the checkout $repo failed" ;;
  *) repo= ;;
esac
mount -t tmpfs tmp /newroot/tmp
mount -t tmpfs run /newroot/run
if [ -n "$repo" ]; then
  mkdir -p "/newroot$repo" && mount --bind /keep "/newroot$repo" \
    || fail "the checkout $repo could not be kept visible under the guest's /tmp or /run"
fi
mount -t bpf bpf /newroot/sys/fs/bpf 2>/dev/null
mount -t tracefs tracefs /newroot/sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /newroot/sys/kernel/debug 2>/dev/null
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
hostname sakura-matrix
chroot /newroot /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  {headers_env} {repo_env} SAKURA_MATRIX=1 PYTHONUNBUFFERED=1 \
  /bin/sh -c 'cd "$SAKURA_REPO" && exec .venv/bin/python -m sakura_uring.matrix.inside "$@"' \
  inside {args}
echo "SAKURA-MATRIX-EXIT rc=$?"
poweroff -f
"""


def _cpio(entries) -> bytes:
    """newc cpio archive from [(path, mode, data)]."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        out.write(b"070701" + b"".join(b"%08X" % v for v in fields) + raw)
        out.write(b"\0" * (-(110 + len(raw)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def initramfs(k: Fetched, repo: Path, out: Path, args=()) -> Path:
    busybox = shutil.which("busybox")
    # the initramfs has no libc: only a static busybox (no ELF interpreter) runs there
    if not busybox or b"ld-linux" in Path(busybox).read_bytes()[:4096]:
        raise RuntimeError("a static busybox is needed: apt-get install busybox-static "
                           "(`make matrix` does it)")
    mods = _module_closure(k.modules, GUEST_MODULES)
    entries = [(d, stat.S_IFDIR | 0o755, b"") for d in
               ("bin", "dev", "proc", "sys", "modules", "host", "rw", "newroot")]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, Path(busybox).read_bytes()))
    entries.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
    for m in mods:
        entries.append((f"modules/{m.name}", stat.S_IFREG | 0o644, m.read_bytes()))
    repo = Path(repo).resolve()           # the guest resolves no host symlink
    init = INIT.format(booted=BOOTED, modules=" ".join(m.name for m in mods),
                       headers_env=shlex.quote(f"BCC_KERNEL_SOURCE={k.headers}"),
                       repo=shlex.quote(str(repo)), repo_env=shlex.quote(f"SAKURA_REPO={repo}"),
                       args=shlex.join(args))
    entries.append(("init", stat.S_IFREG | 0o755, init.encode()))
    out.write_bytes(gzip.compress(_cpio(entries), 1))
    return out


@dataclass
class Boot:
    label: str
    release: str
    package: str
    accel: str = "tcg"
    seconds: float = 0.0
    guest_boot_s: float | None = None
    error: str = ""                 # why there is no result (boot failure, timeout, ...)
    result: dict | None = None      # what inside.py printed
    log: str = ""                   # the serial log's path


def qemu_cmd(kernel: Path, initrd: Path, serial: Path, accel: str, smp: int, mem: str) -> list:
    cpu = "max" if accel == "tcg" else "host"
    # One host thread for all vCPUs under TCG: with multi-threaded TCG a 7.2 guest dies
    # of a stray int3 ("Oops: int3" in trace_syscall_enter) when a tracepoint's static key
    # is flipped while another vCPU runs the patched code: the vCPU runs the int3 after
    # text_poke has removed it (docs/kernels.md, "Single-threaded TCG").
    accel_opt = "tcg,thread=single" if accel == "tcg" else accel
    return ["qemu-system-x86_64", "-accel", accel_opt, "-cpu", cpu, "-smp", str(smp), "-m", mem,
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", f"file:{serial}", "-kernel", str(kernel), "-initrd", str(initrd),
            "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
            "-append", "console=ttyS0 panic=-1 quiet loglevel=3 tsc=reliable"]


def boot(k: Fetched, repo: Path, workdir: Path, *, accel="tcg", smp=2, mem="3G",
         timeout=900, boot_timeout=None, args=(), progress=print) -> Boot:
    """Boot k, run the kernel-facing tests in it; never raises for a guest's failure.
    boot_timeout: give up early when init has not started by then (a KVM attempt)."""
    workdir.mkdir(parents=True, exist_ok=True)
    b = Boot(k.label, k.release, k.package, accel)
    serial = workdir / f"{k.label}.serial"
    b.log = str(serial)
    serial.unlink(missing_ok=True)
    try:
        initrd = initramfs(k, repo, workdir / f"{k.label}.initramfs.gz", args)
    except (OSError, RuntimeError) as exc:
        b.error = f"building the initramfs: {exc}"
        return b
    t0 = time.monotonic()
    proc = subprocess.Popen(qemu_cmd(k.vmlinuz, initrd, serial, accel, smp, mem),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = 0
    try:
        while proc.poll() is None:
            waited = time.monotonic() - t0
            if waited > timeout:
                proc.kill()
                b.error = f"timed out after {timeout} s (per-kernel --timeout)"
                break
            if boot_timeout and waited > boot_timeout and not _booted(serial):
                proc.kill()
                b.error = f"init did not start within {boot_timeout} s"
                break
            time.sleep(1)
            seen = _follow(serial, seen, k.label, progress)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _follow(serial, seen, k.label, progress)
    b.seconds = round(time.monotonic() - t0, 1)
    qemu_out = proc.stdout.read().strip() if proc.stdout else ""
    log = serial.read_text(errors="replace") if serial.exists() else ""
    m = re.search(rf"{BOOTED} uptime=([\d.]+)", log)
    b.guest_boot_s = float(m.group(1)) if m else None
    m = re.search(re.escape(MARK) + r"(\{.*\})", log)
    if m:
        b.result = json.loads(m.group(1))
    elif not b.error:
        g = re.search(r"SAKURA-MATRIX-GUEST-ERROR (.*)", log)
        if g:
            b.error = g.group(1).strip()
        elif proc.returncode:
            b.error = f"qemu exited {proc.returncode}: {qemu_out[-300:]}"
        elif b.guest_boot_s is None:
            b.error = "the kernel did not reach init; serial tail: " + _tail(log)
        else:
            b.error = "the guest stopped without a result; serial tail: " + _tail(log)
    return b


def _booted(serial: Path) -> bool:
    try:
        return BOOTED.encode() in serial.read_bytes()
    except OSError:
        return False


def _tail(log: str, n=400) -> str:
    return " | ".join(l.strip() for l in log[-n:].splitlines() if l.strip())


def _follow(serial: Path, seen: int, label: str, progress) -> int:
    """Pass the guest's progress lines (pytest's dots, [matrix] lines) to the user."""
    try:
        with open(serial, "rb") as f:
            f.seek(seen)
            chunk = f.read()
    except OSError:
        return seen
    end = chunk.rfind(b"\n") + 1
    for line in chunk[:end].decode(errors="replace").splitlines():
        line = line.rstrip()
        if line and not line.startswith(MARK):
            progress(f"  [{label}] {line[:200]}")
    return seen + end
