//! SMS codes end to end: loopback servers speaking Twilio's, Vonage's and a custom gateway's
//! API check each request exactly; the test reads the code they received and logs in through
//! real libpam.

use otp_e2e::ca::TestCa;
use otp_e2e::daemon::describe;
use otp_e2e::pam::{self, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::sms::{code_in, SmsProvider};
use otp_e2e::{me, Daemon, PamService};

const PHONE: &str = "+12025554567";
const MASKED: &str = "+1******4567";

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
    format!(
        "[sms.twilio]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
         auth_token_file = \"{}\"\nfrom = \"+15005550006\"\nbase_url = \"{}\"\n",
        secrets.path("twilio"),
        provider.url()
    )
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

fn refused_with_could_not_send(otpd: &Daemon) {
    let run = PamService::otp(otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors()
            .iter()
            .any(|e| e.contains("Could not send the code")),
        "{run:?}"
    );
}

#[test]
fn twilio_delivers_the_code_and_the_login_completes() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio"], None);
    let otpd = daemon("twilio", "", &twilio_section(&provider, &secrets), "");
    login_with_texted_code(&otpd, &provider);
}

#[test]
fn a_twilio_error_reply_is_logged_with_its_code_and_message() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio", "--fail", "twilio-21211"], None);
    let otpd = daemon("twilio", "", &twilio_section(&provider, &secrets), "");
    refused_with_could_not_send(&otpd);
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

#[test]
fn vonage_delivers_the_code_and_the_login_completes() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "vonage", "--from", "OTP"], None);
    let otpd = daemon(
        "vonage",
        "",
        &vonage_section(&provider, &secrets, "vonage"),
        "",
    );
    login_with_texted_code(&otpd, &provider);
}

#[test]
fn vonage_bad_credentials_are_logged_with_the_error_text() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "vonage", "--from", "OTP"], None);
    let otpd = daemon(
        "vonage",
        "",
        &vonage_section(&provider, &secrets, "wrong"),
        "",
    );
    refused_with_could_not_send(&otpd);
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
    refused_with_could_not_send(&untrusted);
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
    refused_with_could_not_send(&otpd);
    otpd.assert_logged("timed out");
}

#[test]
fn quotas_and_the_cooldown_refuse_sends_with_a_clear_message() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio"], None);
    let section = twilio_section(&provider, &secrets);
    let quota = daemon(
        "twilio",
        "",
        &section,
        "[code]\nresend_after = \"1ms\"\nmax_sends_per_destination_per_hour = 2\n",
    );
    for _ in 0..2 {
        let sent = quota.otpctl_json(&["send", "--via", "sms"]);
        assert_eq!(sent["destination"], MASKED);
        provider.next_message();
    }
    let third = quota.otpctl(&["send", "--via", "sms"]);
    assert_eq!(third.status.code(), Some(1), "{}", describe(&third));
    assert!(String::from_utf8_lossy(&third.stderr).contains("too many codes"));
    quota.assert_logged("quota reached");
    assert!(!provider.has_event(), "nothing was sent past the quota");
    drop(quota);

    let cooldown = daemon("twilio", "", &section, "[code]\nresend_after = \"30s\"\n");
    cooldown.otpctl_json(&["send"]);
    provider.next_message();
    let again = cooldown.otpctl(&["send"]);
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("a new code can be sent in"));
}

#[test]
fn a_new_texted_code_invalidates_the_previous_one() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio"], None);
    let otpd = daemon(
        "twilio",
        "",
        &twilio_section(&provider, &secrets),
        "[code]\nresend_after = \"1ms\"\n",
    );
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().unwrap();
    let old = code_in(&provider.next_message().1);
    login.send("");
    assert!(login.next_prompt().unwrap().contains("A new code was sent"));
    let new = code_in(&provider.next_message().1);
    if old != new {
        login.send(&old);
        assert!(login.next_prompt().unwrap().contains("Wrong code"));
    }
    login.send(&new);
    assert_eq!(login.finish().code, PAM_SUCCESS);
}

#[test]
fn an_expired_texted_code_is_refused() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio"], None);
    // A 1 ms validity has passed before the HTTP exchange even finishes.
    let otpd = daemon(
        "twilio",
        "",
        &twilio_section(&provider, &secrets),
        "[code]\nttl = \"1ms\"\n",
    );
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().unwrap();
    login.send(&code_in(&provider.next_message().1));
    let run = login.finish();
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors().iter().any(|e| e.contains("expired")),
        "{run:?}"
    );
}

#[test]
fn a_registered_number_counts_only_once_confirmed() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio"], None);
    let otpd = Daemon::start(&format!(
        "[sms]\nprovider = \"twilio\"\n{}",
        twilio_section(&provider, &secrets)
    ));
    let bad = otpd.otpctl(&["enroll", "sms", "--phone", "555-1234"]);
    assert_eq!(bad.status.code(), Some(1), "{}", describe(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("E.164"));
    let sent = otpd.otpctl_json(&["enroll", "sms", "--phone", "+447700900123"]);
    assert_eq!(sent["destination"], "+4*******0123");
    let (to, body) = provider.next_message();
    assert_eq!(to, "+447700900123");
    assert_eq!(otpd.otpctl_json(&["status"])["sms"], "none");
    otpd.otpctl_json(&["verify", &code_in(&body)]);
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["sms"], "active");
    assert_eq!(status["sms_number"], "+4*******0123");
}

#[test]
fn when_email_cannot_be_sent_the_user_falls_back_to_sms() {
    if !ready() {
        return;
    }
    let secrets = Secrets::new();
    let provider = SmsProvider::start(&["--provider", "twilio"], None);
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let otpd = Daemon::start(&format!(
        "[sms]\nprovider = \"twilio\"\n{}\n{}[users.\"{}\"]\nphone = \"{PHONE}\"\nemail = \"me@example.com\"\n",
        twilio_section(&provider, &secrets),
        otp_e2e::smtp::email_section(dead_port, "none", ""),
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
