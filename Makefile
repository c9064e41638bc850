# keysock: build, test, install. See README.md.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
# systemd's unit directories from systemd.pc (pkg-config) when it is there: for the
# distribution's own PREFIX (/usr) as it says (Debian 12: /lib/systemd/system, the one
# dh_installsystemd reads); under another PREFIX its layout moved below PREFIX
# (/usr/local/lib/systemd/system, in systemd's search path). Without pkg-config or systemd.pc,
# PREFIX/lib/systemd/{system,user}.
systemd_pc_prefix = $(if $(filter /usr,$(PREFIX)),,--define-variable=prefix=$(PREFIX) --define-variable=root_prefix=$(PREFIX))
systemd_dir = $(or $(shell pkg-config $(systemd_pc_prefix) --variable=$(1) systemd 2>/dev/null),$(PREFIX)/$(2))
UNITDIR ?= $(call systemd_dir,systemdsystemunitdir,lib/systemd/system)
USERUNITDIR ?= $(call systemd_dir,systemduserunitdir,lib/systemd/user)
MANDIR  ?= $(PREFIX)/share/man
# Shell completions, where each shell looks: bash-completion's loader (XDG_DATA_DIRS), zsh's
# fpath (Debian: vendor-completions for the distribution's /usr, site-functions below
# another prefix), fish's vendor_completions.d (XDG_DATA_DIRS).
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/$(if $(filter /usr,$(PREFIX)),vendor-completions,site-functions)
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
# PAM reads only /etc/pam.d (and the vendor /usr/lib/pam.d), whatever PREFIX is; the daemons
# read /etc/keysock/NAME.toml (lib/config.rs).
SYSCONFDIR ?= /etc
PAMDIR  ?= $(SYSCONFDIR)/pam.d
CONFDIR ?= $(SYSCONFDIR)/keysock
SYSUSERSDIR ?= $(call systemd_dir,sysusersdir,lib/sysusers.d)
DESTDIR ?=
CARGO   ?= cargo
# release for install/bench; the tests build debug binaries (much faster on 2 cores).
PROFILE ?= release

# Every program in bins/ installs where its man page's section says: section 1 (users'
# commands) to BINDIR, section 8 (the administrator's) to SBINDIR.
PROGRAMS := $(sort $(basename $(notdir $(wildcard bins/*.rs))) $(notdir $(patsubst %/,%,$(wildcard bins/*/))))
BIN_PROGRAMS := $(foreach p,$(PROGRAMS),$(if $(wildcard man/$(p).1),$(p)))
SBIN_PROGRAMS := $(foreach p,$(PROGRAMS),$(if $(wildcard man/$(p).8),$(p)))
$(foreach p,$(filter-out $(BIN_PROGRAMS) $(SBIN_PROGRAMS),$(PROGRAMS)),$(error bins/$(p): no man/$(p).1 or man/$(p).8 to say where it installs))
# scripts/unit-gate.sh builds $(DAEMONS) $(TOOLS): every program.
DAEMONS := $(SBIN_PROGRAMS)
TOOLS   := $(BIN_PROGRAMS)
CARGO_PROFILE_FLAG := $(if $(filter release,$(PROFILE)),--release,)
TARGET  := target/$(PROFILE)

# Units and man pages name the /usr/local paths; installed, they name this install's.
SUBST := sed $(foreach p,$(SBIN_PROGRAMS),-e 's|/usr/local/s\{0,1\}bin/$(p)\b|$(SBINDIR)/$(p)|g') \
  $(foreach p,$(BIN_PROGRAMS),-e 's|/usr/local/s\{0,1\}bin/$(p)\b|$(BINDIR)/$(p)|g') \
  -e 's|/usr/local/sbin/|$(SBINDIR)/|g' -e 's|/usr/local/bin/|$(BINDIR)/|g' \
  -e 's|/usr/local/lib/systemd/system|$(UNITDIR)|g' -e 's|/usr/local/lib/systemd/user|$(USERUNITDIR)|g' \
  -e 's|/usr/local/share/bash\\\{0,1\}-completion/completions|$(BASHCOMPDIR)|g' \
  -e 's|/usr/local/share/zsh/site\\\{0,1\}-functions|$(ZSHCOMPDIR)|g' \
  -e 's|/usr/local/share/fish/vendor_completions.d|$(FISHCOMPDIR)|g' \
  -e 's|/usr/local/share/man|$(MANDIR)|g'
UNITS := $(wildcard units/*.socket units/*.service)
USERUNITS := $(wildcard units/user/*.socket units/user/*.service)
MANPAGES := $(wildcard man/*.[1-8])
# The daemons' configuration files, installed only where none exists (an admin's is kept).
CONFIGS := $(wildcard conf/*.toml)

.PHONY: all build run check deps fmt-check clippy test fuzz fuzz-smoke unit-gate man-gate systemd-test install uninstall deb bench clean

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
	tests/systemd/deb.sh

install:
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(USERUNITDIR) \
	  $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR) $(DESTDIR)$(CONFDIR)
	for p in $(SBIN_PROGRAMS); do install -m 0755 $(TARGET)/$$p $(DESTDIR)$(SBINDIR)/$$p; done
	for p in $(BIN_PROGRAMS); do install -m 0755 $(TARGET)/$$p $(DESTDIR)$(BINDIR)/$$p; done
	# Completions from each program's own clap definition (its hidden --generate-completions).
	set -e; for p in $(PROGRAMS); do \
	  $(TARGET)/$$p --generate-completions bash > $(DESTDIR)$(BASHCOMPDIR)/$$p; \
	  $(TARGET)/$$p --generate-completions zsh > $(DESTDIR)$(ZSHCOMPDIR)/_$$p; \
	  $(TARGET)/$$p --generate-completions fish > $(DESTDIR)$(FISHCOMPDIR)/$$p.fish; \
	  chmod 0644 $(DESTDIR)$(BASHCOMPDIR)/$$p $(DESTDIR)$(ZSHCOMPDIR)/_$$p $(DESTDIR)$(FISHCOMPDIR)/$$p.fish; done
	# The configuration files: an admin's own is never replaced.
	for c in $(CONFIGS); do [ -e $(DESTDIR)$(CONFDIR)/$${c##*/} ] || install -m 0644 $$c $(DESTDIR)$(CONFDIR)/$${c##*/}; done
	for u in $(UNITS); do $(SUBST) $$u > $(DESTDIR)$(UNITDIR)/$${u##*/} && chmod 0644 $(DESTDIR)$(UNITDIR)/$${u##*/}; done
	for u in $(USERUNITS); do $(SUBST) $$u > $(DESTDIR)$(USERUNITDIR)/$${u##*/} && chmod 0644 $(DESTDIR)$(USERUNITDIR)/$${u##*/}; done
	for m in $(MANPAGES); do s=$${m##*.}; install -d -m 0755 $(DESTDIR)$(MANDIR)/man$$s; \
	  $(SUBST) $$m > $(DESTDIR)$(MANDIR)/man$$s/$${m##*/} && chmod 0644 $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; done
	# skd's PAM service: an admin's edited copy is never replaced.
	[ -e $(DESTDIR)$(PAMDIR)/skd ] || { install -d -m 0755 $(DESTDIR)$(PAMDIR) && install -m 0644 units/skd.pam $(DESTDIR)$(PAMDIR)/skd; }
	# System users (remod's network process); made now when installing onto this system.
	install -d -m 0755 $(DESTDIR)$(SYSUSERSDIR)
	install -m 0644 units/keysock.sysusers $(DESTDIR)$(SYSUSERSDIR)/keysock.conf
	[ -n "$(DESTDIR)" ] || ! command -v systemd-sysusers >/dev/null || systemd-sysusers $(SYSUSERSDIR)/keysock.conf

uninstall:
	for p in $(SBIN_PROGRAMS); do rm -f $(DESTDIR)$(SBINDIR)/$$p; done
	for p in $(BIN_PROGRAMS); do rm -f $(DESTDIR)$(BINDIR)/$$p; done
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$${u##*/}; done
	for u in $(USERUNITS); do rm -f $(DESTDIR)$(USERUNITDIR)/$${u##*/}; done
	for m in $(MANPAGES); do s=$${m##*.}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$${m##*/}; done
	for p in $(PROGRAMS); do rm -f $(DESTDIR)$(BASHCOMPDIR)/$$p $(DESTDIR)$(ZSHCOMPDIR)/_$$p $(DESTDIR)$(FISHCOMPDIR)/$$p.fish; done
	# skd's PAM service and the configuration files only if unedited (as installed).
	if cmp -s units/skd.pam $(DESTDIR)$(PAMDIR)/skd; then rm -f $(DESTDIR)$(PAMDIR)/skd; fi
	for c in $(CONFIGS); do if cmp -s $$c $(DESTDIR)$(CONFDIR)/$${c##*/}; then rm -f $(DESTDIR)$(CONFDIR)/$${c##*/}; fi; done
	-rmdir $(DESTDIR)$(CONFDIR) 2>/dev/null
	# The users stay (their ids may own files), as Debian leaves system users.
	rm -f $(DESTDIR)$(SYSUSERSDIR)/keysock.conf

# The Debian package (debian/), built as dpkg-buildpackage does, into target/deb/. Release
# binaries in target/release, shared with `make build` and `make bench`.
deb:
	scripts/build-deb.sh

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
