# keysock: build, test, install. See README.md.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
UNITDIR ?= $(PREFIX)/lib/systemd/system
USERUNITDIR ?= $(PREFIX)/lib/systemd/user
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=
CARGO   ?= cargo
# release for install/bench; the tests build debug binaries (much faster on 2 cores).
PROFILE ?= release

DAEMONS := skd s5d iscepd autoidd
DAEMONS += remod
TOOLS   := tokenctl s5 iscep autoid
TOOLS   += remo build-key-pair
# Administrator tools, section 8: installed to SBINDIR.
SBIN_TOOLS := add-user
CARGO_PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,)
TARGET  := target/$(PROFILE)

.PHONY: all build run check deps fmt-check clippy test fuzz fuzz-smoke unit-gate man-gate systemd-test install uninstall bench clean

all: build

build:
	$(CARGO) build $(CARGO_PROFILE_FLAG) --bins

# The main job on embedded defaults: skd socket-activated on loopback, a walk-through, a clean stop.
run:
	$(CARGO) build --bins
	scripts/demo-skd.sh target/debug

# Everything CI runs. Installs the Debian packages it needs when root and missing.
check: deps fmt-check clippy test fuzz-smoke unit-gate man-gate systemd-test
	@echo "make check: all gates passed"

deps:
	scripts/install-deps.sh

fmt-check:
	$(CARGO) fmt --check
	cd fuzz && $(CARGO) fmt --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

test:
	$(CARGO) test

# Every parser fuzzed (fuzz/, cargo-fuzz on the nightly toolchain; installed when missing):
# FUZZ_SECONDS each (make fuzz), or 5 s each of an unoptimised build as a smoke in make check.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

fuzz-smoke:
	FUZZ_SECONDS=5 FUZZ_DEV=1 scripts/fuzz.sh

unit-gate:
	scripts/unit-gate.sh

man-gate:
	scripts/man-gate.sh

systemd-test:
	$(CARGO) build --bins
	tests/systemd/run.sh
	tests/systemd/iscepd.sh
	tests/systemd/s5d.sh
	tests/systemd/autoidd.sh
	tests/systemd/remod.sh

install:
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR)
	for d in $(DAEMONS) $(SBIN_TOOLS); do install -m 0755 $(TARGET)/$$d $(DESTDIR)$(SBINDIR)/$$d; done
	for t in $(TOOLS); do install -m 0755 $(TARGET)/$$t $(DESTDIR)$(BINDIR)/$$t; done
	for u in units/*.socket units/*.service; do \
	  [ -e "$$u" ] || continue; \
	  sed -E 's|^(ExecStart=[-@:+!]*)[^ ]*/([A-Za-z0-9_-]+)|\1$(SBINDIR)/\2|' "$$u" > $(DESTDIR)$(UNITDIR)/$$(basename $$u); \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u); \
	done
	if [ -d units/user ]; then install -d $(DESTDIR)$(USERUNITDIR); \
	  for u in units/user/*; do \
	    sed -E 's|^(ExecStart=[-@:+!]*)[^ ]*/([A-Za-z0-9_-]+)|\1$(SBINDIR)/\2|' "$$u" > $(DESTDIR)$(USERUNITDIR)/$$(basename $$u); \
	  done; fi
	for m in man/*.[1-8]; do \
	  [ -e "$$m" ] || continue; s=$${m##*.}; install -d $(DESTDIR)$(MANDIR)/man$$s; install -m 0644 $$m $(DESTDIR)$(MANDIR)/man$$s/; \
	done

uninstall:
	for d in $(DAEMONS) $(SBIN_TOOLS); do rm -f $(DESTDIR)$(SBINDIR)/$$d; done
	for t in $(TOOLS); do rm -f $(DESTDIR)$(BINDIR)/$$t; done
	for u in units/*.socket units/*.service; do rm -f $(DESTDIR)$(UNITDIR)/$$(basename $$u); done
	for m in man/*.[1-8]; do [ -e "$$m" ] || continue; s=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$$(basename $$m); done

bench:
	$(CARGO) build --release --bins
	scripts/bench-skd.sh target/release
	scripts/bench-iscep.sh target/release
	scripts/bench-s5.sh target/release
	scripts/bench-autoid.sh target/release
	scripts/bench-remod.sh target/release

clean:
	$(CARGO) clean
	rm -rf fuzz/target fuzz/artifacts
