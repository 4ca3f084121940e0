//! The real PAM conversation and PAM items, called through libpam directly.
//!
//! pamsm's `conv()` leaks the reply and leaves the typed code in memory, so the application's
//! conversation function is called here: the reply is copied into a `Secret`, the C copy is
//! overwritten with zeros, and both allocations are freed.

use crate::relay::{ConvError, Conversation};
use otp_proto::Secret;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

use crate::ffi::*;

#[link(name = "pam")]
extern "C" {
    fn pam_get_item(pamh: *const c_void, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_get_user(pamh: *const c_void, user: *mut *const c_char, prompt: *const c_char) -> c_int;
    fn pam_syslog(pamh: *const c_void, priority: c_int, fmt: *const c_char, ...);
}

/// A borrowed PAM handle, valid for the duration of one entry-point call.
pub struct Handle(*const c_void);

impl Handle {
    /// # Safety
    /// `pamh` must be the handle libpam passed to the current entry point.
    pub unsafe fn from_pamsm(pamh: &pamsm::Pam) -> Handle {
        // SAFETY: `pamsm::Pam` is `#[repr(transparent)]` over the raw `pam_handle_t *`.
        Handle(unsafe { *(pamh as *const pamsm::Pam as *const *const c_void) })
    }

    /// PAM_USER, asking the application for it if it is not set yet.
    pub fn user(&self) -> Option<String> {
        let mut user: *const c_char = ptr::null();
        // SAFETY: valid handle; libpam owns the returned string.
        let rc = unsafe { pam_get_user(self.0, &mut user, ptr::null()) };
        (rc == PAM_SUCCESS).then(|| copy(user)).flatten()
    }

    pub fn service(&self) -> Option<String> {
        self.string_item(PAM_SERVICE)
    }

    pub fn rhost(&self) -> Option<String> {
        self.string_item(PAM_RHOST)
    }

    pub fn tty(&self) -> Option<String> {
        self.string_item(PAM_TTY)
    }

    /// A line in syslog through `pam_syslog`, which prefixes the module and service.
    pub fn log(&self, priority: c_int, message: &str) {
        if let Ok(line) = CString::new(message.replace('\0', " ")) {
            // SAFETY: constant format with one string argument.
            unsafe { pam_syslog(self.0, priority, c"%s".as_ptr(), line.as_ptr()) };
        }
    }

    fn string_item(&self, item: c_int) -> Option<String> {
        let mut value: *const c_void = ptr::null();
        // SAFETY: valid handle; string items are NUL-terminated and owned by libpam.
        let rc = unsafe { pam_get_item(self.0, item, &mut value) };
        if rc != PAM_SUCCESS {
            return None;
        }
        copy(value as *const c_char)
    }

    /// One message through the application's conversation function.
    fn converse(&self, style: c_int, text: &str) -> Result<Option<Secret>, ConvError> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: valid handle; PAM_CONV points at a `struct pam_conv`.
        let rc = unsafe { pam_get_item(self.0, PAM_CONV, &mut item) };
        if rc != PAM_SUCCESS || item.is_null() {
            return Err(ConvError);
        }
        // SAFETY: checked non-null; libpam keeps it alive for the call.
        let conv = unsafe { &*(item as *const PamConv) };
        let Some(function) = conv.conv else {
            return Err(ConvError);
        };
        let text = CString::new(text.replace('\0', " ")).map_err(|_| ConvError)?;
        let message = PamMessage {
            msg_style: style,
            msg: text.as_ptr(),
        };
        let mut messages = [&message as *const PamMessage];
        let mut response: *mut PamResponse = ptr::null_mut();
        // SAFETY: one valid message; the application allocates `response` with malloc.
        let rc = unsafe { function(1, messages.as_mut_ptr(), &mut response, conv.appdata_ptr) };
        // SAFETY: `response` is null or a malloc'd array of one entry, now ours to free.
        let answer = unsafe { take_response(response) };
        if rc != PAM_SUCCESS {
            return Err(ConvError);
        }
        Ok(answer)
    }
}

/// Copy the reply out, wipe the C copy, free everything.
unsafe fn take_response(response: *mut PamResponse) -> Option<Secret> {
    if response.is_null() {
        return None;
    }
    // SAFETY: non-null array of one `pam_response` from the application.
    let resp = unsafe { (*response).resp };
    let answer = if resp.is_null() {
        None
    } else {
        // SAFETY: the application returns a NUL-terminated malloc'd string.
        let len = unsafe { libc::strlen(resp) };
        let bytes = unsafe { std::slice::from_raw_parts(resp as *const u8, len) };
        let answer = Secret::from(String::from_utf8_lossy(bytes).into_owned());
        for i in 0..len {
            // SAFETY: within the string; volatile so the wipe is not optimised away.
            unsafe { ptr::write_volatile(resp.add(i), 0) };
        }
        // SAFETY: malloc'd by the application, freed once.
        unsafe { libc::free(resp as *mut c_void) };
        Some(answer)
    };
    // SAFETY: malloc'd by the application, freed once.
    unsafe { libc::free(response as *mut c_void) };
    answer
}

fn copy(s: *const c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: libpam strings are NUL-terminated.
    Some(unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
}

impl Conversation for Handle {
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Secret, ConvError> {
        let style = if echo {
            PAM_PROMPT_ECHO_ON
        } else {
            PAM_PROMPT_ECHO_OFF
        };
        Ok(self.converse(style, text)?.unwrap_or_default())
    }

    fn info(&mut self, text: &str) {
        let _ = self.converse(PAM_TEXT_INFO, text);
    }

    fn error(&mut self, text: &str) {
        let _ = self.converse(PAM_ERROR_MSG, text);
    }
}
