//! Rows of remod's users database (lib/remo/users.rs): written by add-user, by the original's
//! add_user, or by hand with sqlite3, so any column may hold any SQLite type. A row is looked
//! up and its public key parsed, as remod's login does; rows add-user writes read back.
//! Input: user, public key, unix_user, allow, separated by NUL; the first byte picks the
//! SQLite types of the last three.
#![no_main]

use std::cell::RefCell;

use keysock::remo::users::{add, lookup, open, parse_allow};
use libfuzzer_sys::fuzz_target;
use rusqlite::types::Value;
use rusqlite::{params, Connection};

thread_local! {
    static DB: RefCell<Connection> = RefCell::new(open(std::path::Path::new(":memory:")).unwrap());
}

fn as_type(sel: u8, b: &[u8]) -> Value {
    match sel % 5 {
        0 => Value::Null,
        1 => Value::Integer(
            b.iter()
                .fold(0i64, |a, x| a.wrapping_mul(251).wrapping_add(*x as i64)),
        ),
        2 => Value::Real(b.len() as f64 / 3.0),
        3 => Value::Text(String::from_utf8_lossy(b).into_owned()),
        _ => Value::Blob(b.to_vec()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut f = rest.splitn(4, |b| *b == 0);
    let user = String::from_utf8_lossy(f.next().unwrap_or_default()).into_owned();
    let public = f.next().unwrap_or_default();
    let unix_user = f.next().unwrap_or_default();
    let allow = f.next().unwrap_or_default();
    DB.with(|db| {
        let c = db.borrow();
        c.execute("DELETE FROM users", []).unwrap();
        c.execute(
            "INSERT INTO users(user, pub, unix_user, allow) VALUES (?1, ?2, ?3, ?4)",
            params![
                user,
                as_type(sel, public),
                as_type(sel / 5, unix_user),
                as_type(sel / 25, allow)
            ],
        )
        .unwrap();
        if let Ok(Some(u)) = lookup(&c, &user) {
            let _ = keysock::keyfile::parse_public(&u.public);
            if let Some(a) = &u.allow {
                assert!(a.iter().all(|x| !x.is_empty() && !x.contains(',')));
            }
        }
        // What add-user writes reads back (text columns as given, the allowlist split).
        let (uu, al) = (
            String::from_utf8_lossy(unix_user),
            String::from_utf8_lossy(allow),
        );
        add(&c, &user, public, Some(&uu), Some(&al), true).unwrap();
        let u = lookup(&c, &user).unwrap().expect("the row just added");
        assert_eq!(u.public, public);
        assert_eq!(u.unix_user.as_deref(), (!uu.is_empty()).then_some(&*uu));
        assert_eq!(u.allow, Some(parse_allow(&al)));
        assert_eq!(parse_allow(&parse_allow(&al).join(",")), parse_allow(&al));
    });
});
