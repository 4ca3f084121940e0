//! A small PAM application for tests: `pamclient SERVICE USER` runs pam_authenticate with a
//! conversation that prints every message as one line (`PROMPT_ECHO_OFF: ...`, `INFO: ...`;
//! newlines escaped as `\n`) and answers each prompt with the next line of stdin (end of input
//! fails the conversation). Ends with `RESULT: <code> <pam_strerror>`. `PAMCLIENT_RHOST`, when
//! set, becomes PAM_RHOST (as sshd sets it from the connection). `PAMCLIENT_LOGINS=N` runs N
//! transactions in this one process, as a long-lived host does (answers keep coming from
//! stdin); `PAMCLIENT_MODULE=PATH` prints `MODULE: loaded` or `MODULE: unloaded` after each
//! `pam_end`.

use std::ffi::{c_int, c_void, CStr, CString};
use std::io::{BufRead, Write};
use std::ptr;

use pam_otp::ffi::app::{pam_authenticate, pam_end, pam_start, pam_strerror};
use pam_otp::ffi::{
    PamConv, PamMessage, PamResponse, PAM_CONV_ERR, PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF,
    PAM_PROMPT_ECHO_ON,
};

#[link(name = "pam")]
extern "C" {
    fn pam_set_item(pamh: *mut c_void, item_type: c_int, item: *const c_void) -> c_int;
}

/// One line to the test; a test that stopped listening is not an error here.
/// The first line pamclient prints, once pam_wrapper is set up.
fn pam_wrapper_ready() -> &'static str {
    "PAMCLIENT: started"
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

unsafe extern "C" fn conversation(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    _appdata: *mut c_void,
) -> c_int {
    let n = n as usize;
    // SAFETY: calloc'd array the caller frees; libpam's convention.
    let replies =
        unsafe { libc::calloc(n, std::mem::size_of::<PamResponse>()) } as *mut PamResponse;
    for i in 0..n {
        // Linux-PAM passes an array of pointers.
        let msg = unsafe { &**msgs.add(i) };
        let text = unsafe { CStr::from_ptr(msg.msg) }
            .to_string_lossy()
            .replace('\n', "\\n");
        let kind = match msg.msg_style {
            PAM_PROMPT_ECHO_OFF => "PROMPT_ECHO_OFF",
            PAM_PROMPT_ECHO_ON => "PROMPT_ECHO_ON",
            PAM_ERROR_MSG => "ERROR",
            _ => "INFO",
        };
        say(&format!("{kind}: {text}"));
        if msg.msg_style == PAM_PROMPT_ECHO_OFF || msg.msg_style == PAM_PROMPT_ECHO_ON {
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
                unsafe { libc::free(replies as *mut c_void) };
                return PAM_CONV_ERR;
            }
            let answer = CString::new(line.trim_end_matches('\n')).unwrap_or_default();
            unsafe { (*replies.add(i)).resp = libc::strdup(answer.as_ptr()) };
        }
    }
    unsafe { *resp = replies };
    0
}

fn main() {
    // pam_wrapper has made its /tmp/pam.X directory by now (its constructor ran before main):
    // the harness holds its lock until this line (tests/src/pam.rs, `WrapperLock`).
    say(pam_wrapper_ready());
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: pamclient SERVICE USER  (answers on stdin)");
        std::process::exit(2);
    }
    let service = CString::new(args[1].as_str()).expect("service");
    let user = CString::new(args[2].as_str()).expect("user");
    let logins: usize = std::env::var("PAMCLIENT_LOGINS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let module = std::env::var_os("PAMCLIENT_MODULE")
        .map(|m| CString::new(m.into_encoded_bytes()).expect("module path"));
    for _ in 0..logins {
        login(&service, &user);
        if let Some(module) = &module {
            say(&format!("MODULE: {}", loaded(module)));
        }
    }
}

/// One PAM transaction, as a host that serves many logins runs each: pam_start,
/// pam_authenticate, pam_end (which unloads the service's modules, unless a module says no).
fn login(service: &CStr, user: &CStr) {
    let conv = PamConv {
        conv: Some(conversation),
        appdata_ptr: ptr::null_mut(),
    };
    let mut pamh: *mut c_void = ptr::null_mut();
    let rc = unsafe { pam_start(service.as_ptr(), user.as_ptr(), &conv, &mut pamh) };
    if rc != 0 {
        say(&format!("RESULT: {rc} pam_start failed"));
        return;
    }
    if let Some(rhost) = std::env::var_os("PAMCLIENT_RHOST") {
        let rhost = CString::new(rhost.into_encoded_bytes()).expect("rhost");
        let rc = unsafe { pam_set_item(pamh, pam_otp::ffi::PAM_RHOST, rhost.as_ptr().cast()) };
        if rc != 0 {
            say(&format!("RESULT: {rc} pam_set_item failed"));
            unsafe { pam_end(pamh, rc) };
            return;
        }
    }
    let rc = unsafe { pam_authenticate(pamh, 0) };
    let text = unsafe { CStr::from_ptr(pam_strerror(pamh, rc)) }
        .to_string_lossy()
        .into_owned();
    say(&format!("RESULT: {rc} {text}"));
    unsafe { pam_end(pamh, rc) };
}

/// "loaded" if `module` is still mapped in this process (`RTLD_NOLOAD` finds it without loading).
fn loaded(module: &CStr) -> &'static str {
    let handle = unsafe { libc::dlopen(module.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return "unloaded";
    }
    unsafe { libc::dlclose(handle) };
    "loaded"
}
