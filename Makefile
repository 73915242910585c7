# sakura_uring: every target installs what it needs on first use, and is quick after.
#   make demo   the main job: wrk against nginx and the HTTP server in four models
#   make test   the test suite against the real kernel
#   make matrix the kernel-facing tests on Debian's 5.10 / 6.1 / 6.12 / newest kernels
#               under QEMU and on the host kernel; writes docs/kernels.md
SHELL := /bin/bash
PY    ?= python3
VENV  := .venv
VPY   := $(VENV)/bin/python
CACHE := $(abspath .cache)
HDRS  := $(CACHE)/kernel-headers
# Debian packages: liburing for the binding, bcc + headers for tracing, gcc to build,
# fio as a real io_uring workload the tracer is checked against
DEB_PKGS := liburing-dev python3-bpfcc linux-headers-amd64 gcc libc6-dev wrk nginx-light curl fio
# the kernel matrix boots other kernels under QEMU with a busybox initramfs (its own
# tests boot one too, so `make test` installs these as well)
MATRIX_PKGS := qemu-system-x86 busybox-static
NATIVE_SRC := $(filter-out %/_sakura.c,$(wildcard sakura_uring/_native/*.[ch])) sakura_uring/_native/build.py bpf/abi.h
NATIVE_SO  := $(VENV)/.native-built
export BCC_KERNEL_SOURCE := $(HDRS)

.PHONY: demo test typecheck bench soak exact matrix matrix-ci setup debs matrix-debs venv bcc mounts clean

demo: setup
	$(VPY) -m sakura_uring.bench http --write

test: setup matrix-debs typecheck
	$(VPY) -m pytest -q tests

# the package is typed (py.typed): mypy over it must stay clean
typecheck: $(VENV)/.mypy
	$(VPY) -m mypy sakura_uring

# what `bench chains` measures the chains against (never a runtime dependency): the PyPI
# liburing binding (its 2026 releases die of SIGILL at import on this CPU kind) and aiofiles
$(VENV)/.peers: $(VPY)
	$(VPY) -m pip install -q "liburing==2024.5.3" "aiofiles>=23"
	@touch $@

$(VENV)/.mypy: $(VPY)
	$(VPY) -m pip install -q "mypy>=1.5"
	@touch $@

bench: setup $(VENV)/.peers
	$(VPY) -m sakura_uring.bench chains
	$(VPY) -m sakura_uring.bench steps

soak: setup
	$(VPY) -m sakura_uring.bench soak

exact: setup
	$(VPY) -m sakura_uring.bench exact

matrix: setup matrix-debs
	$(VPY) -m sakura_uring.matrix --write

# CI: the oldest and the newest kernel only (the whole .ci/run stays under 25 minutes)
matrix-ci: setup matrix-debs
	$(VPY) -m sakura_uring.matrix --kernels oldest,newest

setup: debs venv bcc mounts

# apt-get only when a package is missing (dpkg-query is fast)
define ensure_debs
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo ">> installing Debian packages:$$missing"; \
	  [ "$$(id -u)" = 0 ] || { echo "need root to apt-get install$$missing" >&2; exit 1; }; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

debs:
	$(call ensure_debs,$(DEB_PKGS))

matrix-debs:
	$(call ensure_debs,$(MATRIX_PKGS))

venv: $(NATIVE_SO)

$(VPY):
	@echo ">> creating $(VENV)"
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "setuptools>=61" wheel "cffi>=1.15" "pytest>=7" "hypothesis>=6" "matplotlib>=3.6"

# the cffi extension is built by the package build, never at import time
$(NATIVE_SO): $(VPY) $(NATIVE_SRC) pyproject.toml setup.py
	@echo ">> building sakura_uring (cffi extension against liburing)"
	$(VPY) -m pip install -q --no-build-isolation --no-deps -e .
	@touch $@

# bcc: expose only Debian's pure-Python bcc package to the venv, and give it a merged
# header tree (this kernel has no headers package of its own; never touch /lib/modules)
bcc: $(CACHE)/bcc-path/.linked $(HDRS)/.done

$(CACHE)/bcc-path/.linked: $(VPY)
	@mkdir -p $(CACHE)/bcc-path
	@ln -sfn /usr/lib/python3/dist-packages/bcc $(CACHE)/bcc-path/bcc
	@site=$$($(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  echo "$(CACHE)/bcc-path" > $$site/sakura-bcc.pth
	@touch $@

$(HDRS)/.done:
	@common=$$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1); \
	arch=$$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | grep -v cloud | sort -V | tail -1); \
	[ -n "$$common" ] && [ -n "$$arch" ] || { echo "no Debian kernel headers under /usr/src" >&2; exit 1; }; \
	echo ">> merging $$common and $$arch into $(HDRS)"; \
	rm -rf $(HDRS) && mkdir -p $(HDRS) && \
	cp -as $$common/. $(HDRS)/ && cp -asn $$arch/. $(HDRS)/ && touch $@

# bcc reads /sys/kernel/debug; tracefs is needed for tracepoints
mounts:
	@mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug || \
	  echo "warning: could not mount debugfs at /sys/kernel/debug (bcc needs it)" >&2
	@mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing || \
	  echo "warning: could not mount tracefs at /sys/kernel/tracing" >&2

clean:
	rm -rf $(VENV) $(CACHE) build *.egg-info sakura_uring/_native/_sakura*.so sakura_uring/_native/_sakura.c
