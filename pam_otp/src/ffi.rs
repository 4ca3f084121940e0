//! The C side of PAM (`<security/pam_appl.h>`, `<security/pam_ext.h>`): item numbers, message
//! styles, the structs an application and a module exchange, and the few libpam functions the
//! module calls; `app` holds the calls of the application side, for the tests' PAM client and
//! the benchmark. One set of declarations for the whole workspace.

use std::ffi::{c_char, c_int, c_void};

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_SERVICE_ERR: c_int = 3;
pub const PAM_PERM_DENIED: c_int = 6;
pub const PAM_AUTH_ERR: c_int = 7;
pub const PAM_AUTHINFO_UNAVAIL: c_int = 9;
pub const PAM_CONV_ERR: c_int = 19;

pub const PAM_SERVICE: c_int = 1;
pub const PAM_TTY: c_int = 3;
pub const PAM_RHOST: c_int = 4;
pub const PAM_CONV: c_int = 5;
pub const PAM_AUTHTOK: c_int = 6;

pub const PAM_PROMPT_ECHO_OFF: c_int = 1;
pub const PAM_PROMPT_ECHO_ON: c_int = 2;
pub const PAM_ERROR_MSG: c_int = 3;
pub const PAM_TEXT_INFO: c_int = 4;

#[repr(C)]
pub struct PamMessage {
    pub msg_style: c_int,
    pub msg: *const c_char,
}

#[repr(C)]
pub struct PamResponse {
    pub resp: *mut c_char,
    pub resp_retcode: c_int,
}

pub type ConvFn = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
pub struct PamConv {
    pub conv: Option<ConvFn>,
    pub appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    /// `const void **item`: string items are NUL-terminated and owned by libpam.
    pub fn pam_get_item(pamh: *const c_void, item_type: c_int, item: *mut *const c_void) -> c_int;
    /// libpam copies string items; setting PAM_AUTHTOK overwrites and frees the old value.
    pub fn pam_set_item(pamh: *const c_void, item_type: c_int, item: *const c_void) -> c_int;
    /// PAM_USER, asking the application through the conversation if it is not set yet.
    pub fn pam_get_user(
        pamh: *const c_void,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    /// syslog(3) at LOG_AUTHPRIV, prefixed with `module(service:facility): `. Variadic: call it
    /// only with the format `"%s"` and one C string.
    pub fn pam_syslog(pamh: *const c_void, priority: c_int, fmt: *const c_char, ...);
}

/// The application side of libpam (`<security/pam_appl.h>`): what a login program calls.
pub mod app {
    use super::PamConv;
    use std::ffi::{c_char, c_int, c_void};

    #[link(name = "pam")]
    extern "C" {
        pub fn pam_start(
            service: *const c_char,
            user: *const c_char,
            conv: *const PamConv,
            pamh: *mut *mut c_void,
        ) -> c_int;
        pub fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
        pub fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
        pub fn pam_strerror(pamh: *mut c_void, errnum: c_int) -> *const c_char;
    }
}
