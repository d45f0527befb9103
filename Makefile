# meshbpf: `make demo` and `make test` are the two commands a fresh clone needs.
# Both install what is missing (Debian packages, as root) before building.

CARGO     ?= cargo
ARCH      := $(shell uname -m)
BIN       := target/release/meshbpf
# `make static` and `make deb` (the package carries the static binary).
STATIC_TARGET := $(ARCH)-unknown-linux-gnu
STATIC_BIN    := target/$(STATIC_TARGET)/release/meshbpf
DEB_EXTRA     := target/deb-extra
DEB_DIR       := target/debian
CARGO_DEB_VERSION := 3.8.0

# Build: clang compiles bpf/*.bpf.c; libelf/zlib/pkg-config for libbpf-sys.
# Run and test: iproute2 (ip netns, veth), bpftool (make vmlinux, benchmarks),
# iputils-ping and python3 (test traffic), util-linux (nsenter, unshare, setpriv),
# prometheus (its server scrapes `meshbpf serve` in tests/serve.rs; promtool checks the exposition),
# strace (tests/crash.rs kills commands at their syscalls), python3-scapy
# (tests/parse_scapy.rs: an oracle for the packet parser that shares no code with it),
# tcpdump (tests/flows_capture.rs checks flows and stats against its dissection of a
# capture of the same traffic; tests/capture_traffic.rs reads `meshbpf capture` files with it),
# tshark (tests/capture_traffic.rs: a second pcapng reader, which also decodes the
# per-packet comments; installed non-interactively, so its debconf question about
# non-root capture keeps its default, no).
DEB_PACKAGES := clang llvm libelf-dev zlib1g-dev pkg-config make iproute2 bpftool \
                iputils-ping python3 util-linux prometheus strace python3-scapy tcpdump \
                tshark
# Benchmarks also compare with the established tools when they are installed.
BENCH_PACKAGES := xdp-tools bpftrace
# The VM tests (tests/vm): QEMU, a static busybox for the initramfs, objcopy
# (module dependencies), xz (Debian's compressed modules) and kmod (insmod and
# rmmod for the LSM monitor's module tests); udev for the boot with systemd as
# PID 1 (tests/vm_systemd.rs): the device units that meshbpf-attach@ and
# meshbpf-filter@ bind to come from udev.
VM_PACKAGES := qemu-system-x86 busybox-static binutils xz-utils kmod udev
# The package test: systemd-analyze verifies the units, man-db resolves the
# man pages they name.
DEPLOY_PACKAGES := systemd man-db
# `make lint`: clang-format checks the C (bpf/, include/, tests/fixtures/)
# against .clang-format; rustfmt and clippy come with the Rust toolchain.
LINT_PACKAGES := clang-format
C_SOURCES := $(wildcard bpf/*.c include/*.h tests/fixtures/*.c tests/fixtures/*.h)

.PHONY: all deps bench-deps vm-deps deploy-deps lint-deps build static deb lint fmt test test-crash test-static test-deb test-vm demo bench vmlinux clean

all: build

deps:
	@$(call install_missing,$(DEB_PACKAGES))
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup) first" >&2; exit 1; }

bench-deps: deps
	@$(call install_missing,$(BENCH_PACKAGES))

vm-deps: deps
	@$(call install_missing,$(VM_PACKAGES))

deploy-deps: deps
	@$(call install_missing,$(DEPLOY_PACKAGES))

lint-deps: deps
	@$(call install_missing,$(LINT_PACKAGES))
	@if command -v rustup >/dev/null; then for c in rustfmt clippy; do \
	  rustup component list --installed | grep -q "^$$c-" || rustup component add $$c; done; fi

# Quiet when everything is present; one apt-get call for whatever is not.
define install_missing
missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages: $$missing; run as root or: sudo apt-get install $$missing" >&2; exit 1; fi; \
  echo "installing:" $$missing; \
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
fi
endef

build: deps
	$(CARGO) build --release --locked

# One statically linked binary: libbpf-sys builds libbpf and links Debian's
# libelf.a and libz.a (from libelf-dev and zlib1g-dev), glibc is linked in.
static: deps
	@if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx $(STATIC_TARGET); then \
	  rustup target add $(STATIC_TARGET); fi
	LIBBPF_SYS_LIBRARY_PATH=/usr/lib/$(ARCH)-linux-gnu RUSTFLAGS="-C target-feature=+crt-static" \
	  $(CARGO) build --release --locked --features static --target $(STATIC_TARGET)
	@ldd $(STATIC_BIN) 2>&1 | grep -Eq 'not a dynamic executable|statically linked' \
	  || { echo "$(STATIC_BIN) is not statically linked:" >&2; ldd $(STATIC_BIN) >&2; exit 1; }
	@echo "$(STATIC_BIN): statically linked"

# The .deb (cargo-deb; [package.metadata.deb] in Cargo.toml lists its files):
# the static binary, man pages and completions it generates, deploy/systemd.
deb: static
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked --version $(CARGO_DEB_VERSION)
	rm -rf $(DEB_EXTRA) $(DEB_DIR)
	mkdir -p $(DEB_EXTRA)/completions
	$(STATIC_BIN) man $(DEB_EXTRA)/man >/dev/null
	$(STATIC_BIN) completions bash > $(DEB_EXTRA)/completions/meshbpf.bash
	$(STATIC_BIN) completions zsh > $(DEB_EXTRA)/completions/_meshbpf
	$(STATIC_BIN) completions fish > $(DEB_EXTRA)/completions/meshbpf.fish
	$(CARGO) deb --no-build --target $(STATIC_TARGET) --output $(DEB_DIR)/

# Formatting (Rust and C) and clippy on every target; warnings are errors.
# --all-targets leaves out the tests with `test = false` (the VM's, the
# package's), so clippy names every tests/*.rs once more.
lint: lint-deps
	python3 .ci/layout src
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(CARGO) clippy --locked $(patsubst tests/%.rs,--test %,$(wildcard tests/*.rs)) -- -D warnings
	clang-format --dry-run --Werror $(C_SOURCES)

# Rewrites the sources in place the way `make lint` wants them.
fmt: lint-deps
	$(CARGO) fmt
	clang-format -i $(C_SOURCES)

# Tests keep the rule sets that filters save for boot out of /var/lib.
test: export MESHBPF_STATE_DIR = $(CURDIR)/target/test-state
test: deps
	@$(MAKE) --no-print-directory lint
	$(CARGO) test --locked
	@$(MAKE) --no-print-directory test-static test-deb
	@$(MAKE) --no-print-directory test-vm

# tests/crash.rs at every kill point instead of `make test`'s sample of each
# command family (tens of minutes).
test-crash: deps
	MESHBPF_CRASH_ALL=1 $(CARGO) test --locked --test crash

# The end-to-end tests once more, on the static binary (tests/common takes
# MESHBPF_BIN at compile time): the demo, real traffic, and Prometheus
# scraping `meshbpf serve`.
test-static: static
	MESHBPF_BIN=$(CURDIR)/$(STATIC_BIN) $(CARGO) test --locked --test demo --test attach_traffic --test serve

# The crash tests at every kill point; `make test` tries every second one.
# The package unpacked into a scratch root: contents, units, capabilities.
test-deb: deb deploy-deps
	MESHBPF_DEB=$$(ls $(CURDIR)/$(DEB_DIR)/*.deb) $(CARGO) test --locked --test deb_package

# The tests of hooks this kernel refuses, and the traffic tests, inside QEMU
# booting Debian's 6.1 and 6.12 kernels (MESHBPF_VM_KERNELS); see tests/vm/tests.
# The package's units run there under systemd, installed from `make deb`.
test-vm: vm-deps deb
	CARGO=$(CARGO) bash tests/vm/test-vm

demo: build
	bash tests/demo.sh $(BIN)

bench: bench-deps vm-deps
	$(CARGO) bench --locked --bench bench

# Regenerates the kernel type header from this machine's BTF (commit the result).
vmlinux:
	@command -v bpftool >/dev/null || $(MAKE) deps
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux/$(ARCH)/vmlinux.h
	{ echo "# vmlinux.h"; echo; \
	  echo "Generated by \`make vmlinux\` (bpftool btf dump file /sys/kernel/btf/vmlinux format c)."; \
	  echo "Programs use CO-RE, so one header serves every kernel with BTF; regenerate only to reach newer types."; \
	  echo; echo "| arch | kernel | generated | bpftool | sha256 of vmlinux.h |"; echo "|---|---|---|---|---|"; \
	  echo "| $(ARCH) | $$(uname -r) ($$(uname -v)) | $$(date -u +%Y-%m-%d) | $$(bpftool version | head -1) | $$(sha256sum vmlinux/$(ARCH)/vmlinux.h | cut -c1-16)… |"; \
	} > vmlinux/README.md

clean:
	$(CARGO) clean
