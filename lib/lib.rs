//! keysock: the shared library behind the daemons and tools in `bins/`.
//! One mechanism per module; binaries only parse their command line and wire these together.

pub mod autoid;
pub mod base64;
pub mod child;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod detach;
pub mod http;
pub mod iscep;
pub mod keyfile;
pub mod locked;
pub mod pam;
pub mod privfile;
pub mod pyjson;
pub mod remo;
pub mod s5;
pub mod secret;
pub mod sks;
pub mod sqlite;
pub mod throttle;
pub mod tls;
