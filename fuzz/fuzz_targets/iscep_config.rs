//! `iscepd.toml` (lib/iscep/config.rs), written by an administrator, and the SEND_CMD
//! arguments a client's packet carries, checked against it. Input: TOML, then a NUL, then
//! JSON arguments.
#![no_main]

use keysock::iscep::config::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, args) = text.split_once('\0').unwrap_or((text, ""));
    let Ok(cfg) = parse(toml, &|u| (u == "nobody").then_some((65534, 65534))) else {
        return;
    };
    let args: Option<serde_json::Value> = serde_json::from_str(args).ok();
    for c in &cfg.commands {
        assert!(!c.name.is_empty());
        assert!(c.exec.first().is_some_and(|p| p.starts_with('/')));
        assert!(c.timeout.as_secs_f64() > 0.0 && c.timeout.as_secs() <= 86400);
        assert_eq!(cfg.get(&c.name).map(|x| &x.name), Some(&c.name));
        if let Ok(v) = c.check_args(args.as_ref()) {
            let m = v.as_object().expect("an object");
            assert_eq!(m.len(), c.args.len());
            for (n, t) in &c.args {
                assert!(t.accepts(&m[n]));
            }
        }
        let _ = c.allows(Some("alice"));
    }
});
