//! Sent codes end to end, one story at a time, each told once and run for every channel: a real
//! SMTP server (`email::…`) and a loopback Twilio (`sms::…`) receive what otpd sends, the test
//! reads the code there and logs in through real libpam or otpctl. What only one channel has
//! (TLS and SMTP AUTH, the providers' request shapes and errors) stays in email_login.rs and
//! sms_login.rs.

use otp_e2e::daemon::describe;
use otp_e2e::inbox::{assert_could_not_send, daemon, daemon_to_nowhere, Inbox};
use otp_e2e::pam::{PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::{me, Daemon, PamService};

/// One `#[test]` per story and channel: `email::STORY` and `sms::STORY`.
macro_rules! for_every_channel {
    ($($story:ident),* $(,)?) => {
        mod email {
            $(
                #[test]
                fn $story() {
                    if otp_e2e::pam::available() && otp_e2e::smtp::available() {
                        super::$story::<otp_e2e::smtp::SmtpServer>();
                    }
                }
            )*
        }
        mod sms {
            $(
                #[test]
                fn $story() {
                    if otp_e2e::pam::available() {
                        super::$story::<otp_e2e::sms::TwilioInbox>();
                    }
                }
            )*
        }
    };
}

for_every_channel!(
    a_sent_code_logs_in_and_never_reaches_the_log,
    an_empty_answer_sends_a_new_code_and_the_old_one_dies,
    a_resend_within_the_cooldown_says_how_long_to_wait,
    the_hourly_quota_refuses_sends_with_a_clear_message,
    concurrent_challenges_accept_every_open_code_once_in_any_order,
    without_concurrent_challenges_only_the_newest_code_works,
    an_expired_code_is_refused_as_expired,
    max_attempts_ends_the_login_and_counts_toward_lockout,
    alphanumeric_codes_avoid_look_alikes_and_ignore_case,
    an_unreachable_server_means_could_not_send_and_a_denied_login,
    a_registered_destination_counts_only_once_confirmed,
    a_user_with_an_app_and_a_destination_chooses,
);

fn other_than(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

fn a_sent_code_logs_in_and_never_reaches_the_log<I: Inbox>() {
    let inbox = I::open();
    let facts = inbox.facts();
    let otpd = daemon(&inbox, "");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("a prompt");
    assert!(
        prompt.contains(&format!("A code was sent to {}", facts.masked)),
        "{prompt}"
    );
    assert!(prompt.contains("Empty line for a new code"), "{prompt}");
    let sent = inbox.next();
    assert_eq!(sent.to, facts.destination);
    assert_eq!(sent.via, facts.via);
    assert!(sent.text.contains("valid for 5 minutes"), "{}", sent.text);
    let code = sent.code();
    assert_eq!(code.len(), 6, "{code}");
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    login.send(&code);
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    otpd.assert_logged(&format!("allowed ({}, challenge ", facts.via));
    let log = otpd.log();
    assert!(
        !log.contains(&code),
        "the code never reaches the log:\n{log}"
    );
}

fn an_empty_answer_sends_a_new_code_and_the_old_one_dies<I: Inbox>() {
    let inbox = I::open();
    let otpd = daemon(&inbox, "[code]\nresend_after = \"1ms\"\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().expect("a prompt");
    let old = inbox.next().code();
    login.send("");
    let prompt = login.next_prompt().expect("a second prompt");
    assert!(prompt.contains("A new code was sent"), "{prompt}");
    let new = inbox.next().code();
    if old != new {
        login.send(&old);
        let prompt = login.next_prompt().expect("another try");
        assert!(
            prompt.contains("Wrong code"),
            "the old code is dead: {prompt}"
        );
    }
    login.send(&new);
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}

fn a_resend_within_the_cooldown_says_how_long_to_wait<I: Inbox>() {
    let inbox = I::open();
    let otpd = daemon(&inbox, "[code]\nresend_after = \"30s\"\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().expect("a prompt");
    let code = inbox.next().code();
    login.send("");
    let prompt = login.next_prompt().expect("a second prompt");
    assert!(prompt.contains("A new code can be sent in"), "{prompt}");
    assert!(
        inbox.nothing_arrived(),
        "no second code inside the cooldown"
    );
    login.send(&code);
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    // otpctl asking for a code is held to the same cooldown.
    let again = otpd.otpctl(&["send"]);
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("a new code can be sent in"),
        "{}",
        describe(&again)
    );
    assert!(
        inbox.nothing_arrived(),
        "no code for otpctl inside the cooldown"
    );
}

fn the_hourly_quota_refuses_sends_with_a_clear_message<I: Inbox>() {
    let inbox = I::open();
    let facts = inbox.facts();
    let otpd = daemon(
        &inbox,
        "[code]\nresend_after = \"1ms\"\nmax_sends_per_destination_per_hour = 2\n",
    );
    for _ in 0..2 {
        let sent = otpd.otpctl_json(&["send", "--via", facts.via_arg()]);
        assert_eq!(sent["destination"], facts.masked, "{sent}");
        assert_eq!(inbox.next().to, facts.destination);
    }
    let third = otpd.otpctl(&["send", "--via", facts.via_arg()]);
    assert_eq!(third.status.code(), Some(1), "{}", describe(&third));
    assert!(
        String::from_utf8_lossy(&third.stderr).contains("too many codes"),
        "{}",
        describe(&third)
    );
    otpd.assert_logged("quota reached");
    assert!(inbox.nothing_arrived(), "nothing was sent past the quota");
}

fn concurrent_challenges_accept_every_open_code_once_in_any_order<I: Inbox>() {
    let inbox = I::open();
    let facts = inbox.facts();
    let otpd = daemon(
        &inbox,
        "[code]\nconcurrent_challenges = true\nresend_after = \"1ms\"\n",
    );
    let mut codes = Vec::new();
    for _ in 0..3 {
        let sent = otpd.otpctl_json(&["send"]);
        assert_eq!(sent["destination"], facts.masked, "{sent}");
        assert!(
            sent["challenge"].as_str().unwrap_or_default().len() >= 8,
            "{sent}"
        );
        codes.push(inbox.next().code());
    }
    let service = PamService::otp(&otpd, "");
    for i in [1, 2, 0] {
        let mut login = service.start(&me());
        let prompt = login.next_prompt().expect("a prompt");
        assert!(prompt.contains("already sent"), "{prompt}");
        login.send(&codes[i]);
        let run = login.finish();
        assert_eq!(run.code, PAM_SUCCESS, "code {i}: {run:?}\n{}", otpd.log());
    }
    // Each once: nothing is waiting any more, so a login sends a fresh code.
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("a prompt");
    assert!(prompt.contains("A code was sent"), "{prompt}");
    assert!(inbox.next().has_code(), "a fresh code went out");
    login.send(&codes[1]);
    let prompt = login.next_prompt().expect("another try");
    assert!(prompt.contains("Wrong code"), "{prompt}");
}

fn without_concurrent_challenges_only_the_newest_code_works<I: Inbox>() {
    let inbox = I::open();
    let otpd = daemon(&inbox, "[code]\nresend_after = \"1ms\"\n");
    otpd.otpctl_json(&["send"]);
    let first = inbox.next().code();
    otpd.otpctl_json(&["send"]);
    let second = inbox.next().code();
    if first != second {
        let wrong = otpd.otpctl(&["verify", &first]);
        assert_eq!(wrong.status.code(), Some(1), "{}", describe(&wrong));
    }
    let right = otpd.otpctl(&["verify", &second]);
    assert!(right.status.success(), "{}", describe(&right));
}

fn an_expired_code_is_refused_as_expired<I: Inbox>() {
    let inbox = I::open();
    // A 1 ms validity has passed before the delivery even finishes.
    let otpd = daemon(&inbox, "[code]\nttl = \"1ms\"\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().expect("a prompt");
    login.send(&inbox.next().code());
    let run = login.finish();
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors().iter().any(|e| e.contains("expired")),
        "{run:?}"
    );
}

fn max_attempts_ends_the_login_and_counts_toward_lockout<I: Inbox>() {
    let inbox = I::open();
    let otpd = daemon(&inbox, "[code]\nmax_attempts = 2\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().expect("a prompt");
    let code = inbox.next().code();
    login.send(other_than(&code));
    let prompt = login.next_prompt().expect("another try");
    assert!(prompt.contains("Wrong code; try again"), "{prompt}");
    login.send(other_than(&code));
    let run = login.finish();
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors()
            .iter()
            .any(|e| e.contains("Too many wrong codes")),
        "{run:?}"
    );
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status["recent_failures"], 2, "{status}");
}

fn alphanumeric_codes_avoid_look_alikes_and_ignore_case<I: Inbox>() {
    let inbox = I::open();
    let otpd = daemon(&inbox, "[code]\ncharset = \"alphanumeric\"\nlength = 8\n");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    login.next_prompt().expect("a prompt");
    let code = inbox.next().code();
    assert_eq!(code.len(), 8, "{code}");
    assert!(
        code.bytes()
            .all(|b| b"ABCDEFGHJKMNPQRSTUVWXYZ23456789".contains(&b)),
        "{code}"
    );
    login.send(&code.to_lowercase());
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}

fn an_unreachable_server_means_could_not_send_and_a_denied_login<I: Inbox>() {
    let inbox = I::open();
    let otpd = daemon_to_nowhere(&inbox);
    assert_could_not_send(&otpd);
    otpd.assert_logged(&format!("could not send the code by {}", inbox.facts().via));
    assert!(inbox.nothing_arrived());
}

fn a_registered_destination_counts_only_once_confirmed<I: Inbox>() {
    let inbox = I::open();
    let facts = inbox.facts();
    let (state, shown) = facts.status;
    let (other, other_masked) = facts.other;
    // No destination in [users]; no resend cooldown: the login right after confirming sends.
    let otpd = Daemon::start(&format!(
        "{}\n[code]\nresend_after = \"1ms\"\n",
        inbox.config()
    ));
    let [enroll, channel, flag] = facts.enroll;
    let (invalid, refusal) = facts.invalid;
    let bad = otpd.otpctl(&[enroll, channel, flag, invalid]);
    assert_eq!(bad.status.code(), Some(1), "{}", describe(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(refusal),
        "{}",
        describe(&bad)
    );
    let sent = otpd.otpctl_json(&[enroll, channel, flag, other]);
    assert_eq!(sent["destination"], other_masked, "{sent}");
    let arrived = inbox.next();
    assert_eq!(arrived.to, other);
    assert_eq!(otpd.otpctl_json(&["status"])[state], "none");
    let before = PamService::otp(&otpd, "").login(&me(), &[]);
    assert_eq!(before.code, PAM_AUTH_ERR, "not yet a method: {before:?}");
    assert!(
        inbox.nothing_arrived(),
        "nothing is sent to it before: {before:?}"
    );
    let verified = otpd.otpctl_json(&["verify", &arrived.code()]);
    assert_eq!(verified["activated"], true, "{verified}");
    let status = otpd.otpctl_json(&["status"]);
    assert_eq!(status[state], "active", "{status}");
    assert_eq!(status[shown], other_masked, "{status}");
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("a prompt");
    assert!(prompt.contains(other_masked), "{prompt}");
    login.send(&inbox.next().code());
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}

fn a_user_with_an_app_and_a_destination_chooses<I: Inbox>() {
    let inbox = I::open();
    let facts = inbox.facts();
    // No resend cooldown: the code that proves the sent-code factor was just sent.
    let otpd = daemon(&inbox, "[code]\nresend_after = \"1ms\"\n");
    otpd.otpctl_json(&["send"]);
    otpd.enroll_totp_proving(&me(), &inbox.next().code());
    if facts.hears_of_changes {
        let notice = inbox.next();
        assert!(!notice.has_code(), "{}", notice.text);
        assert!(
            notice.text.contains("new authenticator app key"),
            "{}",
            notice.text
        );
    } else {
        assert!(
            inbox.nothing_arrived(),
            "only the address on file hears of changes"
        );
    }
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me());
    let menu = login.next_prompt().expect("a menu");
    assert!(
        menu.contains("1) authenticator app")
            && menu.contains(&format!("2) {} {}", facts.via, facts.masked)),
        "{menu}"
    );
    login.send("2");
    let prompt = login.next_prompt().expect("a prompt");
    assert!(prompt.contains("A code was sent"), "{prompt}");
    login.send(&inbox.next().code());
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
}
