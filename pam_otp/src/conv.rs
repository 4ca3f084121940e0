//! The real PAM conversation, and the PAM items the module reads, through libpam directly.
//!
//! pamsm's `conv()` leaks the reply and leaves the typed code in memory, so the application's
//! conversation function is called here: the reply is copied into a `Secret`, the C copy is
//! overwritten with zeros, and both allocations are freed. Texts from the daemon are passed in
//! buffers that are wiped afterwards too, since at first-login enrollment they carry a new key.

use crate::ffi::*;
use crate::relay::{ConvError, Conversation};
use otp_proto::Secret;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use zeroize::{Zeroize, Zeroizing};

// `Handle::from_pamsm` reads a `pamsm::Pam` as the raw pointer it wraps.
const _: () = assert!(std::mem::size_of::<pamsm::Pam>() == std::mem::size_of::<*const c_void>());

/// A borrowed PAM handle, valid for the duration of one entry-point call.
#[derive(Clone, Copy)]
pub struct Handle(*const c_void);

impl Handle {
    /// # Safety
    /// `pamh` must be the handle libpam passed to the current entry point, and the `Handle`
    /// must not outlive that call.
    pub unsafe fn from_pamsm(pamh: &pamsm::Pam) -> Handle {
        // SAFETY: `pamsm::Pam` is `#[repr(transparent)]` over the raw `pam_handle_t *` (its
        // field is private to pamsm, hence the cast); the size is checked above.
        Handle(unsafe { *(pamh as *const pamsm::Pam as *const *const c_void) })
    }

    pub(crate) fn raw(self) -> *const c_void {
        self.0
    }

    /// PAM_USER, asking the application for it if it is not set yet. `None` unless it is a
    /// non-empty UTF-8 name: a mangled name must not be authenticated as some other name.
    pub fn user(self) -> Option<String> {
        let mut user: *const c_char = ptr::null();
        // SAFETY: valid handle; libpam owns the returned string.
        let rc = unsafe { pam_get_user(self.0, &mut user, ptr::null()) };
        if rc != PAM_SUCCESS || user.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated, alive for this call.
        let name = unsafe { CStr::from_ptr(user) }.to_str().ok()?;
        (!name.is_empty()).then(|| name.to_owned())
    }

    /// PAM_SERVICE: sshd, login, sudo...
    pub fn service(self) -> Option<String> {
        self.string_item(PAM_SERVICE)
    }

    /// PAM_RHOST, for the daemon's audit line.
    pub fn rhost(self) -> Option<String> {
        self.string_item(PAM_RHOST)
    }

    /// PAM_TTY, for the daemon's audit line.
    pub fn tty(self) -> Option<String> {
        self.string_item(PAM_TTY)
    }

    /// PAM_AUTHTOK, what an earlier module or the application set as the password (for
    /// `forward_pass`); copied into a `Secret`, libpam keeps its own.
    pub fn authtok(self) -> Option<Secret> {
        let mut value: *const c_void = ptr::null();
        // SAFETY: valid handle; PAM_AUTHTOK is a NUL-terminated string owned by libpam.
        let rc = unsafe { pam_get_item(self.0, PAM_AUTHTOK, &mut value) };
        if rc != PAM_SUCCESS || value.is_null() {
            return None;
        }
        // SAFETY: non-null string item, alive for this call.
        let bytes = unsafe { CStr::from_ptr(value as *const c_char) }.to_bytes();
        Some(Secret::from(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// Set PAM_AUTHTOK for the modules after this one (`None` removes it). The C copy made
    /// here is wiped; libpam wipes the value it replaces. False if libpam refused, or the
    /// value holds a NUL (it would be cut short).
    pub fn set_authtok(self, value: Option<&Secret>) -> bool {
        let rc = match value {
            Some(secret) => {
                if secret.expose().contains('\0') {
                    return false;
                }
                let text = c_text(secret.expose());
                // SAFETY: valid handle; libpam copies the NUL-terminated string.
                unsafe { pam_set_item(self.0, PAM_AUTHTOK, text.as_ptr() as *const c_void) }
            }
            // SAFETY: valid handle; a null item clears it.
            None => unsafe { pam_set_item(self.0, PAM_AUTHTOK, ptr::null()) },
        };
        rc == PAM_SUCCESS
    }

    /// A string item, lossily decoded (these only go to logs).
    fn string_item(self, item: c_int) -> Option<String> {
        let mut value: *const c_void = ptr::null();
        // SAFETY: valid handle; string items are NUL-terminated and owned by libpam.
        let rc = unsafe { pam_get_item(self.0, item, &mut value) };
        if rc != PAM_SUCCESS || value.is_null() {
            return None;
        }
        // SAFETY: non-null string item, alive for this call.
        let s = unsafe { CStr::from_ptr(value as *const c_char) };
        Some(s.to_string_lossy().into_owned())
    }

    /// The application's conversation (PAM_CONV), if it set one.
    fn conv(&self) -> Option<&PamConv> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: valid handle; PAM_CONV points at the application's `struct pam_conv`.
        let rc = unsafe { pam_get_item(self.0, PAM_CONV, &mut item) };
        if rc != PAM_SUCCESS || item.is_null() {
            return None;
        }
        // SAFETY: checked non-null; libpam keeps it alive at least for this call.
        Some(unsafe { &*(item as *const PamConv) })
    }
}

/// The person at the keyboard, through the application's conversation function.
pub struct PamConversation(Handle);

impl PamConversation {
    pub fn new(pamh: Handle) -> PamConversation {
        PamConversation(pamh)
    }

    fn say(&self, style: c_int, text: &str) -> Result<Option<Secret>, ConvError> {
        let conv = self.0.conv().ok_or(ConvError)?;
        // SAFETY: the application's conversation, which follows the PAM contract.
        unsafe { converse(conv, style, text) }
    }
}

impl Conversation for PamConversation {
    /// A prompt answered with no reply string counts as a failed conversation, not as an
    /// empty answer (which otpd would take as "send a new code").
    fn prompt(&mut self, text: &str, echo: bool) -> Result<Secret, ConvError> {
        let style = if echo {
            PAM_PROMPT_ECHO_ON
        } else {
            PAM_PROMPT_ECHO_OFF
        };
        self.say(style, text)?.ok_or(ConvError)
    }

    fn info(&mut self, text: &str) {
        let _ = self.say(PAM_TEXT_INFO, text);
    }

    fn error(&mut self, text: &str) {
        let _ = self.say(PAM_ERROR_MSG, text);
    }
}

/// Send one message through a conversation function and take its reply, if any.
///
/// # Safety
/// `conv.conv` must follow the PAM conversation contract: on success `*resp` is null or a
/// malloc'd array of one `pam_response` whose `resp` is null or a malloc'd C string.
pub unsafe fn converse(
    conv: &PamConv,
    style: c_int,
    text: &str,
) -> Result<Option<Secret>, ConvError> {
    let Some(function) = conv.conv else {
        return Err(ConvError);
    };
    let text = c_text(text);
    let message = PamMessage {
        msg_style: style,
        msg: text.as_ptr() as *const c_char,
    };
    let mut messages = [&message as *const PamMessage];
    let mut response: *mut PamResponse = ptr::null_mut();
    // SAFETY: one valid message that outlives the call; the contract is the caller's.
    let rc = unsafe { function(1, messages.as_mut_ptr(), &mut response, conv.appdata_ptr) };
    // Taken (wiped and freed) even on failure, as libpam's own pam_prompt does.
    // SAFETY: null or the application's malloc'd reply, now ours.
    let answer = unsafe { take_response(response) };
    if rc != PAM_SUCCESS {
        return Err(ConvError);
    }
    Ok(answer)
}

/// `text` as a NUL-terminated C string in a buffer wiped on drop (a NUL inside becomes a
/// space). Sized exactly, so that adding the terminator does not reallocate and leave a copy.
fn c_text(text: &str) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(text.len() + 1));
    buf.extend(text.bytes().map(|b| if b == 0 { b' ' } else { b }));
    buf.push(0);
    buf
}

/// Copy the reply out, wipe the C copy, free the string and the array.
///
/// # Safety
/// `response` is null or a malloc'd array of one `pam_response` owned by the caller, whose
/// `resp` is null or a malloc'd NUL-terminated string.
unsafe fn take_response(response: *mut PamResponse) -> Option<Secret> {
    if response.is_null() {
        return None;
    }
    // SAFETY: non-null array of one `pam_response`.
    let resp = unsafe { (*response).resp };
    let answer = (!resp.is_null()).then(|| {
        // SAFETY: a malloc'd C string, freed once, here.
        unsafe {
            let answer = take_string(resp);
            libc::free(resp as *mut c_void);
            answer
        }
    });
    // SAFETY: malloc'd by the application, freed once, here.
    unsafe { libc::free(response as *mut c_void) };
    answer
}

/// Copy a C string into a `Secret` and overwrite it with zeros (not freed).
///
/// # Safety
/// `s` is a valid, writable, NUL-terminated string.
unsafe fn take_string(s: *mut c_char) -> Secret {
    // SAFETY: per the contract, `strlen(s)` bytes are readable and writable.
    let bytes = unsafe { std::slice::from_raw_parts_mut(s as *mut u8, libc::strlen(s)) };
    // One copy, straight into the zeroizing `Secret`.
    let answer = Secret::from(String::from_utf8_lossy(bytes).into_owned());
    // Volatile writes that the optimiser keeps even though the buffer is freed next.
    bytes.zeroize();
    answer
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// What a fake application saw, and what it answers.
    struct App {
        seen: Vec<(c_int, String)>,
        answer: Answer,
    }

    enum Answer {
        Text(&'static str),
        /// Fail with PAM_CONV_ERR and allocate nothing.
        Fail,
        /// Succeed without a response array.
        NoArray,
        /// Succeed with an array whose `resp` is null.
        NullResp,
        /// Fail, but hand back an allocated reply anyway (it must still be freed).
        FailAnyway,
    }

    unsafe extern "C" fn app(
        n: c_int,
        msgs: *mut *const PamMessage,
        resp: *mut *mut PamResponse,
        appdata: *mut c_void,
    ) -> c_int {
        let app = unsafe { &mut *(appdata as *mut App) };
        assert_eq!(n, 1);
        let msg = unsafe { &**msgs };
        let text = unsafe { CStr::from_ptr(msg.msg) };
        app.seen
            .push((msg.msg_style, text.to_str().unwrap().to_owned()));
        let array = || {
            let a = unsafe { libc::calloc(1, std::mem::size_of::<PamResponse>()) };
            a as *mut PamResponse
        };
        match app.answer {
            Answer::Text(t) => unsafe {
                let a = array();
                let s = std::ffi::CString::new(t).unwrap();
                (*a).resp = libc::strdup(s.as_ptr());
                *resp = a;
                PAM_SUCCESS
            },
            Answer::Fail => PAM_CONV_ERR,
            Answer::NoArray => PAM_SUCCESS,
            Answer::NullResp => {
                unsafe { *resp = array() };
                PAM_SUCCESS
            }
            Answer::FailAnyway => unsafe {
                let a = array();
                (*a).resp = libc::strdup(c"x".as_ptr());
                *resp = a;
                PAM_CONV_ERR
            },
        }
    }

    fn run(answer: Answer, style: c_int, text: &str) -> (Result<Option<Secret>, ConvError>, App) {
        let mut state = App {
            seen: Vec::new(),
            answer,
        };
        let conv = PamConv {
            conv: Some(app),
            appdata_ptr: &mut state as *mut App as *mut c_void,
        };
        let result = unsafe { converse(&conv, style, text) };
        (result, state)
    }

    #[test]
    fn a_prompt_reaches_the_application_and_the_reply_comes_back() {
        let (result, app) = run(Answer::Text("123456"), PAM_PROMPT_ECHO_OFF, "Code: ");
        assert_eq!(result.unwrap(), Some(Secret::new("123456")));
        assert_eq!(app.seen, [(PAM_PROMPT_ECHO_OFF, "Code: ".to_owned())]);
    }

    #[test]
    fn every_style_is_passed_on_and_a_nul_in_the_text_cannot_cut_it() {
        for style in [
            PAM_PROMPT_ECHO_ON,
            PAM_PROMPT_ECHO_OFF,
            PAM_TEXT_INFO,
            PAM_ERROR_MSG,
        ] {
            let (_, app) = run(Answer::NullResp, style, "a\0b");
            assert_eq!(app.seen, [(style, "a b".to_owned())]);
        }
    }

    #[test]
    fn a_failed_or_empty_handed_conversation_is_reported() {
        let (result, _) = run(Answer::Fail, PAM_PROMPT_ECHO_OFF, "Code: ");
        assert_eq!(result, Err(ConvError));
        let (result, _) = run(Answer::FailAnyway, PAM_PROMPT_ECHO_OFF, "Code: ");
        assert_eq!(result, Err(ConvError));
        let (result, _) = run(Answer::NoArray, PAM_PROMPT_ECHO_OFF, "Code: ");
        assert_eq!(result, Ok(None));
        let (result, _) = run(Answer::NullResp, PAM_PROMPT_ECHO_OFF, "Code: ");
        assert_eq!(result, Ok(None));
    }

    #[test]
    fn no_conversation_function_is_a_failure() {
        let conv = PamConv {
            conv: None,
            appdata_ptr: ptr::null_mut(),
        };
        assert_eq!(
            unsafe { converse(&conv, PAM_TEXT_INFO, "hi") },
            Err(ConvError)
        );
    }

    #[test]
    fn the_c_copy_of_an_answer_is_wiped() {
        unsafe {
            let s = libc::strdup(c"424242".as_ptr());
            let answer = take_string(s);
            assert_eq!(answer.expose(), "424242");
            let wiped = std::slice::from_raw_parts(s as *const u8, 7);
            assert_eq!(wiped, [0; 7]);
            libc::free(s as *mut c_void);
        }
    }

    #[test]
    fn a_non_utf8_answer_is_kept_not_dropped() {
        unsafe {
            let s = libc::strdup(c"12\xff34".as_ptr());
            let answer = take_string(s);
            assert_eq!(answer.expose(), "12\u{fffd}34");
            libc::free(s as *mut c_void);
        }
    }

    #[test]
    fn c_text_is_terminated_and_sized_exactly() {
        let t = c_text("Code: ");
        assert_eq!(&t[..], b"Code: \0");
        assert_eq!(t.capacity(), t.len());
    }
}
