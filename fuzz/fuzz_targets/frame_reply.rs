//! What pam_otp and otpctl read from the socket: a frame body decoded as a `Reply`. The module
//! runs inside sshd and su, so this must never panic; whatever decodes must re-encode the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otp_proto::{frame, Reply};

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = frame::decode::<Reply>(data) {
        let bytes = frame::encode(&reply).expect("a decoded reply encodes");
        let body = &bytes[frame::HEADER_LEN..];
        assert_eq!(frame::decode::<Reply>(body).ok(), Some(reply));
    }
    let _ = frame::read_frame::<Reply>(&mut &data[..]);
});
