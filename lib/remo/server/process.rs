//! The network process's life: `remod --network-process`, started by the monitor with the
//! channel at descriptor 3 and the listening sockets from 4 on.

use std::os::fd::{FromRawFd, OwnedFd};

use super::*;
use crate::daemon;
use crate::daemon::log::quoted;
use crate::remo::monitor::{confine, proto::Channel};

/// Runs the network process; returns its exit status (0: stopped by SIGTERM or idle).
pub fn network_process() -> i32 {
    // SAFETY: the monitor passed descriptor 3 to this process, which takes it once, here.
    let channel = unsafe { OwnedFd::from_raw_fd(3) };
    let rt = match crate::cli::runtime() {
        Ok(rt) => rt,
        Err(f) => {
            eprintln!("remod: {}", f.msg);
            return 71;
        }
    };
    rt.block_on(async move {
        let Ok(ch) = Channel::new(channel) else {
            eprintln!("remod: network process: no channel to the monitor");
            return 71;
        };
        let cfg: NetConfig = match ch.recv().await {
            Ok(Some((data, _))) => match serde_json::from_slice(&data) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("remod: network process: bad configuration: {e}");
                    return 70;
                }
            },
            _ => return 71,
        };
        if let Err(e) = daemon::log::init("remod", cfg.syslog, cfg.debug) {
            eprintln!("remod: {e}");
            return 71;
        }
        let mut bound = Vec::new();
        for (i, name) in cfg.listeners.iter().enumerate() {
            // SAFETY: descriptors 4.. are the listeners the monitor passed, each taken once.
            let fd = unsafe { OwnedFd::from_raw_fd(4 + i as i32) };
            match daemon::listen::adopt(fd) {
                Ok(listener) => bound.push(daemon::Bound {
                    name: name.clone(),
                    listener,
                    own_path: None,
                }),
                Err(e) => {
                    log::error!("network-process listener={name} error={e}", e = quoted(&e));
                    return 71;
                }
            }
        }
        // What needs files is loaded before the file system is closed: OpenSSL's
        // configuration and algorithms (Fernet's AES and HMAC).
        let f = Fernet::new([0; 32]);
        let _ = f.decrypt(f.encrypt(b"").as_bytes(), None);
        for what in confine::confine_network_process() {
            log::warn!(
                "network-process-unconfined what={what}",
                what = quoted(what)
            );
        }
        let server = match Server::new(cfg.clone(), Link::new(ch)) {
            Ok(s) => Arc::new(s),
            Err(e) => match e {},
        };
        let ctl = daemon::Control::new();
        server.spawn_tasks(&ctl);
        let svc = Arc::downgrade(&server);
        let opts = crate::http::Options {
            daemon: daemon::Options {
                idle_exit: cfg.idle_exit,
                // Sessions live in memory: never exit idle while one is open.
                is_busy: Some(daemon::IsBusy::new(move || {
                    svc.upgrade().is_some_and(|s| s.is_busy())
                })),
                max_connections: cfg.max_connections,
                max_per_source: cfg.max_per_source,
                // One thread, the one that reads the monitor's replies: a reply reaches its
                // request without a hop between threads (each costs a wake-up on every
                // /cmd), and the monitor that every request waits for is one thread too.
                workers: 1,
                ..Default::default()
            },
            tls: None,
            limits: Arc::new(crate::http::Limits {
                header_timeout: cfg.header_timeout,
                body_timeout: cfg.body_timeout,
                request_timeout: cfg.request_timeout,
                ..Default::default()
            }),
        };
        let status = server.status();
        let reason = crate::http::serve(bound, opts, ctl, &status, move |req, info| {
            server.clone().handle(req, info)
        })
        .await;
        log::info!("stopped reason={reason}");
        if reason == "monitor-gone" {
            70
        } else {
            0
        }
    })
}
