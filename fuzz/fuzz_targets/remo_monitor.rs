//! remod's monitor requests (lib/remo/monitor/proto.rs): what a compromised network process
//! can send the privileged monitor. Anything decoded encodes back to the same request.
#![no_main]

use keysock::remo::monitor::proto::{decode_reply, decode_request, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(e) = decode_request(data) {
        let again = decode_request(&encode(e.n, &e.body)).expect("our own encoding");
        assert_eq!(again, e);
    }
    if let Some(e) = decode_reply(data) {
        let again = decode_reply(&encode(e.n, &e.body)).expect("our own encoding");
        assert_eq!(again, e);
    }
});
