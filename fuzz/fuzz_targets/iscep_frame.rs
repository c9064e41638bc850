//! iscep frames off the network (lib/iscep/wire.rs): a stream of size-prefixed frames, read
//! as the server and the blocking client read them. Whatever decodes re-encodes to a frame
//! that decodes to the same packet.
#![no_main]

use keysock::iscep::wire::{decode, encode, read_frame, read_frame_blocking, Read};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1 << 16;

fn check(r: &Read) {
    if let Read::Packet(p) = r {
        let f = encode(p.ty, &p.body);
        let size = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(size, f.len() - 4);
        assert_eq!(decode(&f[4..]).as_ref(), Ok(p));
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    // The blocking reader over the whole stream, frame after frame.
    let mut r = data;
    let mut frames = Vec::new();
    while let Ok(f) = read_frame_blocking(&mut r, MAX) {
        check(&f);
        let stop = matches!(f, Read::Closed | Read::TooLarge(_));
        frames.push(format!("{f:?}"));
        if stop {
            break;
        }
    }
    // The async reader (the server's) sees the same frames.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut r = data;
    let mut async_frames = Vec::new();
    rt.block_on(async {
        while let Ok(f) = read_frame(&mut r, MAX).await {
            let stop = matches!(f, Read::Closed | Read::TooLarge(_));
            async_frames.push(format!("{f:?}"));
            if stop {
                break;
            }
        }
    });
    assert_eq!(frames, async_frames);
});
