//! What otpd reads from any local user: a frame body decoded as a `Request`. Must never panic
//! or allocate past the frame cap; whatever decodes must re-encode to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otp_proto::{frame, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = frame::decode::<Request>(data) {
        let bytes = frame::encode(&request).expect("a decoded request encodes");
        let body = &bytes[frame::HEADER_LEN..];
        assert_eq!(frame::decode::<Request>(body).ok(), Some(request));
    }
    if data.len() >= frame::HEADER_LEN {
        let header = [data[0], data[1], data[2], data[3]];
        if let Ok(len) = frame::body_len(header) {
            assert!(len <= frame::MAX_FRAME);
        }
    }
    let _ = frame::read_frame::<Request>(&mut &data[..]);
});
