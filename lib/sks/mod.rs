//! SessionKeyServer protocol (spec: shared/specs/sks.md): the wire format, the token store,
//! and the server side that `skd` runs. `tokenctl skd` works on the same store.

mod changes;
pub mod jedump;
pub mod pg;
pub mod server;
pub mod store;
pub mod wire;

pub use server::{realm_services, Config, Error, Server, DEFAULT_PAM_SERVICE};
pub use store::{RealmHash, Store, Validity};
