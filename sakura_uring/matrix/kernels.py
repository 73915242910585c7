"""Which Debian kernels the matrix boots, and fetching them without installing anything.

A temporary apt configuration under the cache (its own sources list, lists and archives;
/etc/apt is only read, for the mirror this machine already uses) resolves each kernel
through its suite's meta package, so a numbered package that Debian replaced never
breaks the matrix. Per kernel the cache holds the image, the modules the guest needs to
mount the host's root over 9p, and a merged header tree for bcc."""
from __future__ import annotations

import glob
import lzma
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class KernelSpec:
    label: str     # what the table and --kernels call it
    suite: str     # the suite whose meta package picks the version
    note: str      # why it is in the matrix


# Oldest first: the table reads as a history.
KERNELS = (
    KernelSpec("5.10", "bullseye-security", "Debian 11 (bullseye)"),
    KernelSpec("6.1", "bookworm-security", "Debian 12 (bookworm)"),
    KernelSpec("6.12", "trixie-security", "Debian 13 (trixie); also bookworm-backports"),
    KernelSpec("sid", "sid", "newest Debian kernel (unstable)"),
)
BY_LABEL = {k.label: k for k in KERNELS}
SUITES = ("bullseye", "bullseye-security", "bookworm", "bookworm-security", "bookworm-backports",
          "trixie", "trixie-security", "sid")
# Guest modules: enough to mount the host's root over virtio 9p (the generic Debian
# kernels build these as modules; 5.10 also builds virtio_pci as one).
GUEST_MODULES = ("virtio_pci", "9p", "9pnet_virtio", "overlay")


# bump when what is unpacked per kernel changes: a cached kernel is then unpacked again
LAYOUT = "layout-2"


class FetchError(Exception):
    """A kernel could not be fetched; the message says which step failed."""


def _run(cmd, **kw) -> str:
    p = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if p.returncode:
        raise FetchError(f"{' '.join(cmd[:1] + cmd[-2:])}: {(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def mirrors() -> dict:
    """suffix ('' or '-security') -> the Debian mirror this machine's apt already uses."""
    found: dict = {}
    for f in glob.glob("/etc/apt/sources.list.d/*.sources") + ["/etc/apt/sources.list"]:
        try:
            text = open(f).read()
        except OSError:
            continue
        for uri in re.findall(r"(?:URIs:|deb)\s+(\S+)", text):
            uri = uri.rstrip("/")
            for suffix in ("-security", ""):
                if uri.endswith("/debian" + suffix):
                    found.setdefault(suffix, uri)
    if "" not in found:
        raise FetchError("no Debian mirror in /etc/apt sources: the matrix fetches kernels "
                         "from the mirror this machine's apt uses")
    found.setdefault("-security", found[""] + "-security")
    return found


class Apt:
    """apt-get / apt-cache with a private configuration under `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.opts = ["-o", f"Dir::Etc::sourcelist={root}/sources.list",
                     "-o", "Dir::Etc::sourceparts=-",
                     "-o", f"Dir::State::Lists={root}/lists",
                     "-o", f"Dir::Cache={root}/cache",
                     "-o", f"Dir::Cache::pkgcache={root}/cache/pkgcache.bin",
                     "-o", f"Dir::Cache::srcpkgcache={root}/cache/srcpkgcache.bin",
                     "-o", "APT::Sandbox::User=root", "-o", "Acquire::Retries=3"]

    def update(self) -> None:
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        m = mirrors()
        with open(self.root / "sources.list", "w") as f:
            for suite in SUITES:
                uri = m["-security"] if suite.endswith("-security") else m[""]
                f.write(f"deb [signed-by={KEYRING}] {uri} {suite} main\n")
        _run(["apt-get", *self.opts, "update"])

    def version_in(self, pkg: str, suite: str) -> str:
        for line in _run(["apt-cache", *self.opts, "madison", pkg]).splitlines():
            cols = [c.strip() for c in line.split("|")]
            if len(cols) >= 3 and re.search(rf" {re.escape(suite)}/main ", f" {cols[2]} "):
                return cols[1]
        raise FetchError(f"{pkg} is not in {suite}")

    def depends(self, pkg: str, version: str) -> list:
        text = _run(["apt-cache", *self.opts, "show", f"{pkg}={version}"])
        m = re.search(r"^Depends: (.*)$", text, re.M)
        return [d.strip().split()[0] for d in m.group(1).split(",")] if m else []

    def download(self, pkg: str, version: str, into: Path) -> Path:
        into.mkdir(parents=True, exist_ok=True)
        have = list(into.glob(f"{pkg}_*.deb"))
        if not have:
            _run(["apt-get", *self.opts, "download", f"{pkg}={version}"], cwd=into)
            have = list(into.glob(f"{pkg}_*.deb"))
        if not have:
            raise FetchError(f"apt-get download {pkg}={version} left no .deb")
        return have[0]


@dataclass
class Fetched:
    label: str
    release: str        # the guest's uname -r
    package: str        # "linux-image-6.1.0-44-amd64 6.1.192-1 (bookworm-security)"
    vmlinuz: Path
    modules: Path       # lib/modules/<release>, holding the 9p modules
    headers: Path       # merged header tree for BCC_KERNEL_SOURCE


def _extract(deb: Path, dest: Path, patterns=()) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = f"set -o pipefail; dpkg-deb --fsys-tarfile '{deb}' | tar -x -C '{dest}'"
    if patterns:
        cmd += " --wildcards " + " ".join(f"'{p}'" for p in patterns)
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    # a pattern that matches nothing in this package is fine (the image moved in 7.x)
    errors = [l for l in p.stderr.splitlines()
              if "Not found in archive" not in l and "Exiting with failure" not in l]
    if p.returncode and (errors or not patterns):
        raise FetchError(f"extracting {deb.name}: {p.stderr.strip()[-300:]}")


def _module_closure(moddir: Path, names) -> list:
    """The .ko files (decompressed) of `names` and their dependencies, dependencies
    first. Debian ships no modules.dep (depmod runs at install), so the order comes from
    each module's own `depends=` in its .modinfo section."""
    found = {}
    for p in moddir.rglob("*.ko*"):
        if p.name.endswith(".ko.xz"):
            plain = p.with_suffix("")
            if not plain.exists():      # busybox insmod can't read compressed modules
                plain.write_bytes(lzma.decompress(p.read_bytes()))
            p = plain
        if p.name.endswith(".ko"):
            found[p.name[:-3].replace("-", "_")] = p
    out = []
    def visit(name):
        p = found.get(name.replace("-", "_"))
        if p is None or p in out:
            return
        m = re.search(rb"depends=([^\0]*)\0", p.read_bytes())
        for dep in filter(None, (m.group(1).decode().split(",") if m else [])):
            visit(dep)
        out.append(p)
    for n in names:
        visit(n)
    return out


def fetch(apt: Apt, spec: KernelSpec, cache: Path, log=print) -> Fetched:
    """Download and unpack one kernel (image, 9p modules, headers) into cache/kernels/LABEL."""
    version = apt.version_in("linux-image-amd64", spec.suite)
    image = next(d for d in apt.depends("linux-image-amd64", version) if d.startswith("linux-image-"))
    release = image[len("linux-image-"):]
    kver = apt.version_in(image, spec.suite)
    dest = cache / "kernels" / spec.label
    stamp = dest / "FETCHED"
    package = f"{image} {kver} ({spec.suite})"
    if stamp.exists() and stamp.read_text().strip() == f"{package} {LAYOUT}":
        return _fetched(spec.label, release, package, dest)
    log(f"[{spec.label}] fetching {package}")
    shutil.rmtree(dest, ignore_errors=True)
    root = dest / "root"
    debs = cache / "debs"
    # Debian >= 7.x splits the image: vmlinuz in linux-binary-*, modules in linux-modules-*.
    pkgs = [image] + [d for d in apt.depends(image, kver)
                      if d.startswith(("linux-binary-", "linux-modules-"))]
    for pkg in pkgs:
        deb = apt.download(pkg, apt.version_in(pkg, spec.suite), debs)
        _extract(deb, root, ["*/vmlinuz*", "*/fs/9p/*", "*/net/9p/*", "*/fs/netfs/*",
                             "*/fs/fscache/*", "*/fs/overlayfs/*", "*/drivers/virtio/*"])
    # Headers: linux-headers-<release> and the -common tree it depends on.
    hdr = f"linux-headers-{release}"
    hver = apt.version_in(hdr, spec.suite)
    for pkg in [hdr] + [d for d in apt.depends(hdr, hver) if d.startswith("linux-headers-")]:
        _extract(apt.download(pkg, hver, debs), root, ["./usr/src/*"])
    _merge_headers(root, release, dest / "headers")
    moddir = root / "usr/lib/modules" / release
    if not moddir.exists():
        moddir = root / "lib/modules" / release
    if not _module_closure(moddir, GUEST_MODULES):
        raise FetchError(f"{package} has no 9p modules: the guest can't mount the host's root")
    stamp.write_text(f"{package} {LAYOUT}\n")
    return _fetched(spec.label, release, package, dest)


def _merge_headers(root: Path, release: str, out: Path) -> None:
    """One tree bcc can use as BCC_KERNEL_SOURCE: the -common tree overlaid by the
    arch tree (generated headers, .config), as symbolic links into the unpacked debs."""
    src = root / "usr/src"
    arch = src / f"linux-headers-{release}"
    common = [p for p in src.glob("linux-headers-*-common*")]
    if not arch.is_dir() or not common:
        raise FetchError(f"headers for {release} missing after unpacking ({sorted(os.listdir(src))})")
    out.mkdir(parents=True)
    for tree in (common[0], arch):
        for dirpath, dirnames, files in os.walk(tree, followlinks=False):
            rel = os.path.relpath(dirpath, tree)
            for d in list(dirnames):
                full = os.path.join(dirpath, d)
                if os.path.islink(full):    # a linked directory: resolve within the unpack
                    dirnames.remove(d)
                    files.append(d)
                else:
                    os.makedirs(out / rel / d, exist_ok=True)
            for f in files:
                entry = Path(dirpath) / f
                target = out / rel / f
                if target.exists() or target.is_symlink():
                    continue
                real = entry.resolve()
                if not real.exists():   # an absolute link into /usr/src: re-root it
                    link = os.readlink(entry)
                    real = (root / link.lstrip("/")) if link.startswith("/") else real
                if real.exists():
                    target.symlink_to(real)


def _fetched(label, release, package, dest: Path) -> Fetched:
    root = dest / "root"
    vml = sorted(glob.glob(str(root / "boot/vmlinuz*")) + glob.glob(str(root / "usr/lib/modules/*/vmlinuz")))
    if not vml:
        raise FetchError(f"no vmlinuz in the packages of {package}")
    moddir = next((p for p in (root / "usr/lib/modules" / release, root / "lib/modules" / release)
                   if p.exists()), None)
    if moddir is None:
        raise FetchError(f"no modules for {release} in {package}")
    return Fetched(label, release, package, Path(vml[0]), moddir, dest / "headers")
