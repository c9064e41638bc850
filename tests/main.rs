//! The integration tests: one test binary (one link of the library, not one per file), a
//! module per daemon or area, each the file of its name in tests/, sharing `common`. One area:
//! `cargo test --test main skd::`; one test: `cargo test --test main skd::tls_with_pem_and_pkcs12`.

mod common;

mod autoid;
mod autoid_python;
mod config;
mod hardening;
mod iscep;
mod iscep_python;
mod remo;
mod s5;
mod s5_interop;
mod skd;
mod skd_pg;
mod skd_scenario;
