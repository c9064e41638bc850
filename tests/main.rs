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

/// Cargo.toml has `autotests = false`: a tests/*.rs file not declared above would silently
/// never be compiled or run.
#[test]
fn every_test_file_is_a_module_of_main() {
    let dir = common::root().join("tests");
    let main = std::fs::read_to_string(dir.join("main.rs")).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(m) = name.strip_suffix(".rs").filter(|m| *m != "main") {
            let decl = format!("mod {m};");
            assert!(
                main.lines().any(|l| l == decl),
                "tests/{name} is not declared in tests/main.rs ({decl})"
            );
        }
    }
}
