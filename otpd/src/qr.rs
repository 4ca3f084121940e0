//! What a person scans or types to set up an authenticator app: the QR code of the otpauth URI
//! for a terminal, and the key in groups of four. Used by otpctl and by first-login enrollment.

use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

/// Half-block characters, light modules drawn, as `qrencode -t UTF8` does: scans from a terminal
/// with light text on a dark background, the common default. `None` if the URI is too long.
pub fn qr(uri: &str) -> Option<String> {
    let code = QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// "ABCD EFGH ..." is easier to type than one run of 32 letters.
pub fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
