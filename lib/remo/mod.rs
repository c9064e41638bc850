//! remo: remote administration over plain HTTP, wire-compatible with remo_serv 0.6.0
//! (specs/remo_serv.md): signed Ed448 (or RSA) logins, an X448 session key, Fernet-encrypted
//! and numbered bodies. `wire` holds the encodings, `users` the SQLite user database,
//! `server` remod's side and `client` remo's side.

pub mod client;
pub mod monitor;
pub mod server;
pub mod users;
pub mod wire;
