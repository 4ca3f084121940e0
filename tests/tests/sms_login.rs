//! What only SMS has, end to end: loopback servers speaking Twilio's, Vonage's and a custom
//! gateway's API check each request exactly, answer with the providers' errors or not at all,
//! and serve HTTPS; the test reads the code they received and logs in through real libpam. The
//! stories every sent code shares are in sent_codes.rs, where the SMS side speaks Twilio's API
//! (checked on every request), so a plain Twilio login is not repeated here.

use otp_e2e::ca::TestCa;
use otp_e2e::inbox::assert_could_not_send;
use otp_e2e::pam::{self, PAM_SUCCESS};
use otp_e2e::sms::{code_in, SmsProvider, MASKED, PHONE};
use otp_e2e::{me, Daemon, PamService};
use std::path::Path;

fn ready() -> bool {
    pam::available()
}

/// Files holding the provider secrets otpd reads (never inline in the config).
struct Secrets(tempfile::TempDir);

impl Secrets {
    fn new() -> Secrets {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("twilio"), "twilio-token\n").unwrap();
        std::fs::write(dir.path().join("vonage"), "vonage-secret\n").unwrap();
        std::fs::write(dir.path().join("wrong"), "not-the-secret\n").unwrap();
        for name in ["twilio", "vonage", "wrong"] {
            let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
            std::fs::set_permissions(dir.path().join(name), private).unwrap();
        }
        Secrets(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.path().join(name).display().to_string()
    }
}

fn twilio_section(provider: &SmsProvider, secrets: &Secrets) -> String {
    otp_e2e::sms::twilio_section(&provider.url(), Path::new(&secrets.path("twilio")))
}

/// otpd with `[sms]` (provider and `sms_extra` keys), the given provider sub-section, the test
/// user's phone in `[users]`, and `extra` sections.
fn daemon(provider: &str, sms_extra: &str, section: &str, extra: &str) -> Daemon {
    Daemon::start(&format!(
        "[sms]\nprovider = \"{provider}\"\n{sms_extra}\n{section}\n[users.\"{}\"]\nphone = \"{PHONE}\"\n{extra}",
        me()
    ))
}

/// Log in, check the prompt names the masked number, and answer with the texted code.
fn login_with_texted_code(otpd: &Daemon, provider: &SmsProvider) {
    let service = PamService::otp(otpd, "");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("a prompt");
    assert!(
        prompt.contains(&format!("A code was sent to {MASKED}")),
        "{prompt}"
    );
    let (to, body) = provider.next_message();
    assert_eq!(to, PHONE);
    assert!(body.contains("valid for 5 minutes"), "{body}");
    login.send(&code_in(&body));
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    otpd.assert_logged("allowed (SMS, challenge ");
}

#[test]
fn a_twilio_error_reply_is_logged_with_its_code_and_message() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio", "--fail", "twilio-21211"], None);
    let otpd = daemon("twilio", "", &twilio_section(&provider, &secrets), "");
    assert_could_not_send(&otpd);
    assert!(
        otpd.logged("21211") && otpd.logged("is not a valid phone number"),
        "{}",
        otpd.log()
    );
}

fn vonage_section(provider: &SmsProvider, secrets: &Secrets, secret: &str) -> String {
    format!(
        "[sms.vonage]\napi_key = \"vonage-key\"\napi_secret_file = \"{}\"\nfrom = \"OTP\"\n\
         base_url = \"{}\"\n",
        secrets.path(secret),
        provider.url()
    )
}

/// A Vonage provider and otpd sending through it with the secret in file `secret`.
fn vonage(secret: &str) -> (Secrets, SmsProvider, Daemon) {
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "vonage", "--from", "OTP"], None);
    let section = vonage_section(&provider, &secrets, secret);
    let otpd = daemon("vonage", "", &section, "");
    (secrets, provider, otpd)
}

#[test]
fn vonage_delivers_the_code_and_the_login_completes() {
    if !ready() {
        return;
    }
    let (_secrets, provider, otpd) = vonage("vonage");
    login_with_texted_code(&otpd, &provider);
}

#[test]
fn vonage_bad_credentials_are_logged_with_the_error_text() {
    if !ready() {
        return;
    }
    let (_secrets, _provider, otpd) = vonage("wrong");
    assert_could_not_send(&otpd);
    assert!(
        otpd.logged("status \"4\"") && otpd.logged("Bad Credentials"),
        "{}",
        otpd.log()
    );
}

#[test]
fn a_custom_json_gateway_gets_a_post_with_its_headers() {
    if !ready() {
        return;
    }
    let provider = SmsProvider::start(
        &[
            "--provider",
            "custom",
            "--method",
            "POST",
            "--path",
            "/v1/send",
            "--content-type",
            "json",
            "--to-field",
            "to",
            "--body-field",
            "text",
            "--header",
            "X-Api-Key: k123",
            "--header",
            "X-Tenant: t1",
        ],
        None,
    );
    let section = format!(
        "[sms.custom]\nurl = \"{}/v1/send\"\nmethod = \"POST\"\ncontent_type = \"json\"\n\
         template = '{{\"to\": \"{{{{mobile}}}}\", \"text\": \"{{{{body}}}}\"}}'\n\
         headers = \"X-Api-Key: k123, X-Tenant: t1\"\n",
        provider.url()
    );
    let otpd = daemon("custom", "", &section, "");
    login_with_texted_code(&otpd, &provider);
}

#[test]
fn a_custom_form_gateway_gets_a_put_with_a_header_table() {
    if !ready() {
        return;
    }
    let provider = SmsProvider::start(
        &[
            "--provider",
            "custom",
            "--method",
            "PUT",
            "--path",
            "/sms",
            "--content-type",
            "form",
            "--to-field",
            "phone",
            "--body-field",
            "msg",
            "--header",
            "Authorization: Bearer xyz",
        ],
        None,
    );
    let section = format!(
        "[sms.custom]\nurl = \"{}/sms\"\nmethod = \"PUT\"\ncontent_type = \"form\"\n\
         template = \"phone={{{{mobile}}}}&msg={{{{body}}}}\"\n\
         [sms.custom.headers]\nAuthorization = \"Bearer xyz\"\n",
        provider.url()
    );
    let otpd = daemon("custom", "", &section, "");
    login_with_texted_code(&otpd, &provider);
}

#[test]
fn https_to_the_provider_trusts_the_ca_file() {
    if !ready() {
        return;
    }
    let ca = TestCa::new();
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio"], Some(&ca));
    let section = twilio_section(&provider, &secrets);
    let trusted = daemon("twilio", &format!("ca_file = {:?}", ca.ca), &section, "");
    login_with_texted_code(&trusted, &provider);
    drop(trusted);
    let untrusted = daemon("twilio", "", &section, "");
    assert_could_not_send(&untrusted);
    assert!(
        !provider.has_event(),
        "no request got through without the CA"
    );
}

#[test]
fn a_provider_that_never_answers_times_out_and_says_could_not_send() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio", "--delay", "30"], None);
    let otpd = daemon(
        "twilio",
        "timeout = \"1s\"",
        &twilio_section(&provider, &secrets),
        "",
    );
    assert_could_not_send(&otpd);
    otpd.assert_logged("timed out");
}

#[test]
fn when_email_cannot_be_sent_the_user_falls_back_to_sms() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio"], None);
    let otpd = Daemon::start(&format!(
        "[sms]\nprovider = \"twilio\"\n{}\n{}[users.\"{}\"]\nphone = \"{PHONE}\"\nemail = \"me@example.com\"\n",
        twilio_section(&provider, &secrets),
        otp_e2e::smtp::email_section(otp_e2e::inbox::dead_port(), "none", ""),
        me()
    ));
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let menu = login.next_prompt().unwrap();
    assert!(
        menu.contains("1) email m***@e***.com") && menu.contains(&format!("2) SMS {MASKED}")),
        "{menu}"
    );
    login.send("1");
    let prompt = login.next_prompt().unwrap();
    assert!(
        prompt.contains(&format!("A code was sent to {MASKED}")),
        "{prompt}"
    );
    login.send(&code_in(&provider.next_message().1));
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
    assert!(
        run.errors()
            .iter()
            .any(|e| e.contains("Could not send the code by email")),
        "{run:?}"
    );
    assert!(
        otpd.logged("could not send the code by email") && otpd.logged("offering the others"),
        "{}",
        otpd.log()
    );
}
