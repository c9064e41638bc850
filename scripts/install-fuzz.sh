#!/bin/sh
# Installs what fuzzing needs (make fuzz, make fuzz-smoke): cargo-fuzz, pinned, built from
# crates.io when missing or another version. The nightly toolchain must be there already
# (CI machines have it): without it this fails, so the fuzz smoke of `make check` never
# passes by skipping.
set -eu
CARGO_FUZZ_VERSION=0.13.2
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "install-fuzz: the nightly Rust toolchain is missing: cargo-fuzz needs it (rustup toolchain install nightly)" >&2
  exit 1
fi
if cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  exit 0
fi
echo "install-fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
