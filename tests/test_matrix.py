"""The kernel matrix's own machinery: fetching, the guest's initramfs, booting failures,
the report. (The matrix itself — Debian kernels booted under QEMU — is `make matrix`;
CI runs it for the oldest and newest kernel.)"""
import gzip
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sakura_uring.matrix import kernels, report, vm
from sakura_uring.matrix.__main__ import CACHE, labels_of
from sakura_uring.matrix.inside import KERNEL_TESTS, MARK

ROOT = Path(__file__).resolve().parents[1]


def read_cpio(data: bytes) -> dict:
    """newc cpio -> {name: (mode, bytes)}, parsed independently of the writer."""
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos:pos + size]
        pos += size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def fake_module(path: Path, depends: str, xz=False) -> None:
    blob = b"\x7fELF....modinfo\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=x\0"
    path.parent.mkdir(parents=True, exist_ok=True)
    if xz:
        path.with_name(path.name + ".xz").write_bytes(lzma.compress(blob))
    else:
        path.write_bytes(blob)


def test_module_closure_orders_dependencies_first_and_decompresses(tmp_path):
    m = tmp_path / "kernel"
    fake_module(m / "net/9p/9pnet.ko", "", xz=True)
    fake_module(m / "net/9p/9pnet_virtio.ko", "9pnet,virtio_ring", xz=True)
    fake_module(m / "drivers/virtio/virtio_ring.ko", "")
    fake_module(m / "fs/netfs/netfs.ko", "")
    fake_module(m / "fs/9p/9p.ko", "9pnet,netfs", xz=True)
    fake_module(m / "fs/overlayfs/overlay.ko", "")
    names = [p.name for p in kernels._module_closure(tmp_path, kernels.GUEST_MODULES)]
    # virtio_pci is built in here: not found, not needed
    assert names == ["9pnet.ko", "netfs.ko", "9p.ko", "virtio_ring.ko", "9pnet_virtio.ko",
                     "overlay.ko"]
    assert (m / "fs/9p/9p.ko").read_bytes().startswith(b"\x7fELF")


def test_initramfs_holds_busybox_modules_and_an_init_that_runs_the_tests(tmp_path):
    mods = tmp_path / "lib/modules/9.9.9"
    fake_module(mods / "kernel/net/9p/9pnet.ko", "")
    fake_module(mods / "kernel/fs/9p/9p.ko", "9pnet")
    k = kernels.Fetched("x", "9.9.9", "pkg", tmp_path / "vmlinuz", mods, tmp_path / "hdrs")
    out = vm.initramfs(k, ROOT, tmp_path / "initrd.gz", ["-k", "a or b"])
    files = read_cpio(gzip.decompress(out.read_bytes()))
    assert files["bin/busybox"][1] == Path("/bin/busybox").read_bytes()
    assert {"modules/9pnet.ko", "modules/9p.ko"} <= set(files)
    init = files["init"][1].decode()
    assert files["init"][0] & 0o111
    assert "for m in 9pnet.ko 9p.ko;" in init                 # dependency order
    assert f"BCC_KERNEL_SOURCE={tmp_path / 'hdrs'}" in init
    assert f"SAKURA_REPO={ROOT}" in init and 'cd "$SAKURA_REPO" &&' in init
    assert "inside -k 'a or b'" in init                        # arguments stay whole
    assert "-o trans=virtio,version=9p2000.L,ro," in init      # the host root, read-only


def test_a_kernel_that_does_not_boot_is_a_row_not_an_exception(tmp_path):
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(os.urandom(4096))
    mods = tmp_path / "mods"
    mods.mkdir()
    k = kernels.Fetched("bogus", "0.0", "a broken image", bogus, mods, tmp_path)
    lines = []
    b = vm.boot(k, ROOT, tmp_path / "run", timeout=60, progress=lines.append)
    assert b.result is None and b.guest_boot_s is None
    assert b.error.startswith(("qemu exited", "the kernel did not reach init"))
    assert b.seconds < 60
    row = report.Row(k.label, k.release, k.package, b.accel, b.seconds, b.result, b.error)
    assert not row.ok and "NO RESULT" in report.summary(row)


def test_a_guest_past_its_timeout_is_stopped_and_reported(tmp_path):
    """The oldest kernel, fetched as `make matrix` does, given 20 s for a run that takes
    minutes (the guest boots in about 3 s, then runs the tracer tests). The checkout is
    reached through /tmp, as a CI clone there is: the guest mounts its own tmpfs on /tmp
    and must keep the checkout visible (else it stops at once: "can't cd")."""
    apt = kernels.Apt(CACHE / "apt")
    apt.update()
    k = kernels.fetch(apt, kernels.KERNELS[0], CACHE, log=lambda s: None)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    subprocess.run(["mount", "--bind", str(ROOT), str(checkout)], check=True)
    try:
        lines = []
        b = vm.boot(k, checkout, tmp_path / "run", timeout=20, args=["-k", "trace"],
                    progress=lines.append)
    finally:
        subprocess.run(["umount", str(checkout)], check=True)
    assert b.result is None and b.error == "timed out after 20 s (per-kernel --timeout)"
    assert 20 <= b.seconds < 30
    assert any("SAKURA-MATRIX-BOOTED" in l for l in lines)     # it did boot, then ran out


def test_tcg_runs_every_vcpu_on_one_host_thread(tmp_path):
    """Multi-threaded TCG let a 7.2 guest run a stray int3 while a tracepoint's static key
    was flipped (a panic in CI): TCG guests get thread=single, KVM guests are left alone."""
    args = lambda accel: vm.qemu_cmd(tmp_path / "k", tmp_path / "i", tmp_path / "s", accel, 2, "3G")
    tcg = args("tcg")
    assert tcg[tcg.index("-accel") + 1] == "tcg,thread=single"
    assert tcg[tcg.index("-smp") + 1] == "2"
    kvm = args("kvm")
    assert kvm[kvm.index("-accel") + 1] == "kvm"


def test_fetch_names_a_suite_without_the_kernel(tmp_path):
    apt = kernels.Apt(CACHE / "apt")
    apt.update()
    with pytest.raises(kernels.FetchError, match="linux-image-amd64 is not in no-such-suite"):
        kernels.fetch(apt, kernels.KernelSpec("nope", "no-such-suite", ""), tmp_path)
    assert not (tmp_path / "kernels" / "nope").exists()


def test_labels():
    assert labels_of("oldest,newest") == ["5.10", "sid"]
    assert labels_of("6.1,host,6.1") == ["6.1", "host"]
    with pytest.raises(SystemExit, match="unknown kernel '4.19'"):
        labels_of("4.19")


def test_inside_runs_on_the_host_and_reports_every_test(tmp_path):
    """The guest's runner, here on the host kernel: one result line, engines, tests."""
    p = subprocess.run([sys.executable, "-m", "sakura_uring.matrix.inside", "-k", "probe"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    line = next(l for l in p.stdout.splitlines() if l.startswith(MARK))
    res = json.loads(line[len(MARK):])
    assert res["release"] == os.uname().release and res["pytest_rc"] == 0
    assert res["engines"]["link"]["available"] and res["engines"]["kernel"]["available"]
    assert res["opcodes"] >= 58 and "openat" in res["ops"]
    assert res["tests"] and all(t["outcome"] == "passed" for t in res["tests"].values())
    assert all(n.split("::")[0].split("/")[-1] in KERNEL_TESTS for n in res["tests"])


def test_report_table_and_doc(tmp_path):
    res = {"release": "5.10.0-46-amd64", "opcodes": 37, "ops": ["nop", "openat"],
           "features": ["NODROP"],
           "engines": {"link": {"available": False, "reason": "needs LINKED_FILE"},
                       "kernel": {"available": False, "reason": "needs NO_MMAP"}},
           "tests": {"t::a": {"outcome": "passed"},
                     "t::b": {"outcome": "skipped", "reason": "UnsupportedOperation: x"},
                     "t::c": {"outcome": "skipped", "reason": "UnsupportedOperation: x"},
                     "t::d": {"outcome": "failed", "reason": "assert 1 == 2"}}}
    good = dict(res, release="6.12.1", engines={"link": {"available": True, "reason": ""},
                                                "kernel": {"available": True, "reason": ""}},
                tests={"t::a": {"outcome": "passed"}})
    rows = [report.Row("5.10", "5.10.0-46-amd64", "p", "tcg", 100, res, ""),
            report.Row("6.12", "6.12.1", "p", "tcg", 100, good, ""),
            report.Row("sid", "?", "sid", "-", 0, None, "fetch failed: no network")]
    assert not rows[0].ok and rows[1].ok and not rows[2].ok
    doc = tmp_path / "kernels.md"
    doc.write_text("# intro\n\n<!-- matrix:begin -->\nold\n<!-- matrix:end -->\ntail\n")
    report.write_doc(rows, doc)
    text = doc.read_text()
    assert text.startswith("# intro") and text.endswith("tail\n") and "old" not in text
    assert "**6.12.1** (6.12)" in text and "newest one without them: 5.10.0-46-amd64" in text
    assert "| 1 / 2 / 1 |" in text and "2 × UnsupportedOperation: x" in text
    assert "`t::d`: assert 1 == 2" in text and "fetch failed: no network" in text
    report.write_doc(rows, doc)                                # replaced, not appended
    assert doc.read_text() == text
