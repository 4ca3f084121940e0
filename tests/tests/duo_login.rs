//! Duo push, call and passcode through real libpam: otpd talks to the Duo-shaped server
//! (helpers/duo_server.py, every request's signature verified with duo_client), whose phone
//! approves after 2 s, denies, times out, reports fraud or never answers; passcodes; a user
//! Duo allows, denies or sends to enroll; Duo down under failmode secure and safe; a clock Duo
//! refuses. Each story checks what the user read, the PAM result, the audit note and what
//! Duo was asked (the PAM rhost as `ipaddr`).

use otp_e2e::duo::{self, DuoServer, Event, SecretKey, PASSCODE, SKEY};
use otp_e2e::pam::{self, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::{me, Daemon, PamRun, PamService};
use std::time::Instant;

const RHOST: &str = "192.0.2.7";
const PROMPT: &str = "Duo: Press Enter for a push to iOS (XXX-XXX-1234), type `phone` for a \
                      call, or type a passcode: ";

fn ready() -> bool {
    pam::available() && duo::available()
}

/// otpd with `[duo]` pointed at a server that behaves as `behave`.
struct World {
    server: DuoServer,
    _skey: SecretKey,
    otpd: Daemon,
}

fn world(behave: &str, server_args: &[&str], duo_keys: &str, extra: &str) -> World {
    let server = DuoServer::start(behave, server_args);
    let skey = SecretKey::new(SKEY);
    let section = duo::section(&server.host(), &skey, &server.ca.ca, duo_keys);
    let otpd = Daemon::start(&format!("{section}\n{extra}"));
    World {
        server,
        _skey: skey,
        otpd,
    }
}

/// pam_otp with room for a push (`timeout=`, above `[duo] timeout`) and sshd's rhost.
fn service(otpd: &Daemon, args: &str) -> PamService {
    let mut s = PamService::otp(otpd, args);
    s.rhost = Some(RHOST.into());
    s
}

/// Log in answering the Duo prompt with `answer`.
fn duo_login(w: &World, answer: &str) -> PamRun {
    let service = service(&w.otpd, "timeout=90");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("the Duo prompt");
    assert_eq!(prompt, PROMPT);
    login.send(answer);
    login.finish()
}

/// Every request the server took, as (path, params); panics on a rejected one.
fn requests(server: &DuoServer) -> Vec<(String, serde_json::Value)> {
    server
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Request { path, params, .. } => (path, params),
            Event::Rejected(why) => panic!("the Duo server rejected a request of otpd: {why}"),
        })
        .collect()
}

fn infos(run: &PamRun) -> Vec<&str> {
    run.lines
        .iter()
        .filter_map(|l| l.strip_prefix("INFO: "))
        .collect()
}

#[test]
fn a_push_approved_after_two_seconds_lets_the_user_in() {
    if !ready() {
        return;
    }
    let w = world("approve", &[], "", "");
    let began = Instant::now();
    let run = duo_login(&w, "");
    let took = began.elapsed();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", w.otpd.log());
    assert_eq!(infos(&run), ["Waiting for approval on your phone…"]);
    w.otpd.assert_logged("allowed (Duo push)");
    w.otpd.assert_logged(&format!("rhost={RHOST}"));
    let seen = requests(&w.server);
    assert_eq!(seen[0].0, "/auth/v2/preauth");
    assert_eq!(seen[0].1["username"], me().as_str());
    assert_eq!(seen[0].1["ipaddr"], RHOST);
    assert_eq!(seen[1].0, "/auth/v2/auth");
    let auth = &seen[1].1;
    assert_eq!(
        (&auth["factor"], &auth["async"], &auth["ipaddr"]),
        (&"push".into(), &"1".into(), &RHOST.into())
    );
    assert_eq!(auth["device"], "DPFZRS9FB0D46QFTM891");
    assert!(seen[2..].iter().all(|(p, _)| p == "/auth/v2/auth_status"));
    assert!(!seen[2..].is_empty());
    eprintln!("figure: push approved after 2 s: login took {took:?}");
}

#[test]
fn a_phone_call_is_placed_when_the_user_types_phone() {
    if !ready() {
        return;
    }
    let w = world("approve", &[], "", "");
    let run = duo_login(&w, "phone");
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
    w.otpd.assert_logged("allowed (Duo call)");
    let seen = requests(&w.server);
    assert_eq!(seen[1].1["factor"], "phone");
}

#[test]
fn a_denied_push_is_refused_as_a_denial() {
    if !ready() {
        return;
    }
    let w = world("deny", &[], "", "");
    let run = duo_login(&w, "");
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert_eq!(run.errors(), ["The Duo push was denied."]);
    w.otpd.assert_logged("denied: Duo push denied");
}

#[test]
fn a_push_duo_times_out_is_refused_as_a_timeout() {
    if !ready() {
        return;
    }
    let w = world("timeout", &[], "", "");
    let run = duo_login(&w, "");
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert_eq!(run.errors(), ["The Duo push timed out."]);
    w.otpd.assert_logged("denied: Duo push timed out");
}

#[test]
fn a_push_nobody_answers_ends_at_the_configured_timeout() {
    if !ready() {
        return;
    }
    let w = world("silent", &[], "timeout = \"3s\"", "");
    let began = Instant::now();
    let run = duo_login(&w, "");
    let took = began.elapsed();
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert_eq!(run.errors(), ["The Duo push timed out."]);
    w.otpd
        .assert_logged("denied: Duo push timed out (no answer within [duo] timeout)");
    eprintln!("figure: unanswered push with [duo] timeout = 3s: login took {took:?}");
}

#[test]
fn a_push_reported_as_fraud_is_refused_and_logged_as_fraud() {
    if !ready() {
        return;
    }
    let w = world("fraud", &[], "", "");
    let run = duo_login(&w, "");
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert_eq!(
        run.errors(),
        ["The Duo push was reported as fraud; access denied."]
    );
    w.otpd.assert_logged("denied: Duo fraud reported");
    w.otpd.assert_logged("was reported as fraud");
}

#[test]
fn hanging_up_during_a_push_stops_the_wait_long_before_the_duo_timeout() {
    if !ready() {
        return;
    }
    // pam_otp gives up after 2 s; Duo would be waited for 60 s.
    let w = world("silent", &[], "", "");
    let service = service(&w.otpd, "timeout=2");
    let mut login = service.start(&me());
    assert_eq!(login.next_prompt().expect("the Duo prompt"), PROMPT);
    let began = Instant::now();
    login.send("");
    let run = login.finish();
    assert_ne!(run.code, PAM_SUCCESS, "{run:?}");
    w.otpd.assert_logged("aborted: ");
    eprintln!(
        "figure: pam_otp timeout=2 during a push: otpd stopped waiting {:?} after the answer",
        began.elapsed()
    );
    assert!(!w.otpd.log().contains("denied: Duo push timed out"));
}

#[test]
fn a_duo_passcode_is_accepted() {
    if !ready() {
        return;
    }
    let w = world("silent", &[], "", "");
    let run = duo_login(&w, PASSCODE);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
    w.otpd.assert_logged("allowed (Duo passcode)");
    let seen = requests(&w.server);
    assert_eq!(seen[1].1["factor"], "passcode");
    assert_eq!(seen[1].1["passcode"], PASSCODE);
    assert!(
        !w.otpd.log().contains(PASSCODE),
        "a passcode is never logged"
    );
}

#[test]
fn refused_duo_passcodes_count_toward_the_lockout() {
    if !ready() {
        return;
    }
    let w = world("silent", &[], "", "[lockout]\nmax_failures = 2\n");
    for _ in 0..2 {
        let run = duo_login(&w, "999999");
        assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    }
    w.otpd.assert_logged("denied: wrong Duo passcode");
    w.otpd
        .assert_logged("answer (login, Duo passcode): wrong code");
    let sent = requests(&w.server)
        .iter()
        .filter(|(_, p)| p["factor"] == "passcode")
        .count();
    assert_eq!(sent, 2);
    // Locked: the right passcode is not even sent to Duo.
    let service = service(&w.otpd, "timeout=90");
    let run = service.login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert!(
        run.errors()[0].starts_with("Too many failed attempts"),
        "{run:?}"
    );
    assert!(
        requests(&w.server).is_empty(),
        "no request to Duo while locked"
    );
}

#[test]
fn a_user_not_enrolled_with_duo_is_shown_the_enrollment_url() {
    if !ready() {
        return;
    }
    let w = world("enroll", &[], "", "");
    let run = service(&w.otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    let url = format!(
        "https://localhost:{}/portal?code=48bac5d9393fb2c2",
        w.server.port
    );
    assert_eq!(
        run.errors(),
        [format!("You are not enrolled with Duo. Enroll at {url} then log in again.").as_str()]
    );
    w.otpd
        .assert_logged("denied: not enrolled with Duo (enrollment URL shown)");
}

#[test]
fn a_user_duo_allows_is_let_in_without_a_prompt() {
    if !ready() {
        return;
    }
    let w = world("allow", &[], "", "");
    let run = service(&w.otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
    assert!(run.prompts().is_empty());
    w.otpd.assert_logged("allowed (Duo preauth: allow)");
}

#[test]
fn a_user_duo_denies_is_refused_with_duos_words() {
    if !ready() {
        return;
    }
    let w = world("refuse", &[], "", "");
    let run = service(&w.otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert_eq!(
        run.errors(),
        ["Duo denied this login: Your account is disabled"]
    );
    w.otpd.assert_logged("denied: Duo preauth deny");
}

/// otpd whose `[duo] api_host` is a port nothing listens on.
fn duo_down(failmode: &str, extra: &str) -> (Daemon, SecretKey, otp_e2e::ca::TestCa) {
    let skey = SecretKey::new(SKEY);
    let ca = otp_e2e::ca::TestCa::new();
    let host = format!("localhost:{}", otp_e2e::inbox::dead_port());
    let keys = format!("failmode = \"{failmode}\"");
    let otpd = Daemon::start(&format!(
        "{}\n{extra}",
        duo::section(&host, &skey, &ca.ca, &keys)
    ));
    (otpd, skey, ca)
}

#[test]
fn duo_down_with_failmode_secure_denies() {
    if !ready() {
        return;
    }
    let (otpd, _skey, _ca) = duo_down("secure", "");
    let run = service(&otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert_eq!(run.errors(), ["Duo is unreachable; try again later."]);
    otpd.assert_logged("denied: Duo unreachable (preauth)");
}

#[test]
fn duo_down_with_failmode_safe_allows_a_user_with_no_other_method() {
    if !ready() {
        return;
    }
    let (otpd, _skey, _ca) = duo_down("safe", "");
    let run = service(&otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
    otpd.assert_logged("failmode safe: Duo is not required");
    otpd.assert_logged("allowed (Duo unreachable, failmode safe)");
}

#[test]
fn duo_down_with_failmode_safe_leaves_the_users_other_methods() {
    if !ready() {
        return;
    }
    let (otpd, _skey, _ca) = duo_down("safe", "[policy]\ndefault_method = \"duo\"\n");
    let secret = otpd.enroll_totp(&me());
    let service = service(&otpd, "");
    let mut login = service.start(&me());
    let prompt = login.next_prompt().expect("the app prompt");
    assert!(prompt.contains("Verification code"), "{prompt}");
    login.send(&otp_e2e::totp::code(&secret, otp_e2e::totp::now()));
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
    assert_eq!(run.errors(), ["Duo is unreachable; choose another way."]);
    otpd.assert_logged("allowed (totp)");
}

#[test]
fn a_login_refused_for_its_date_says_the_clock_is_wrong() {
    if !ready() {
        return;
    }
    let w = world("approve", &["--clock-offset", "-900"], "", "");
    let run = service(&w.otpd, "").login(&me(), &[]);
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert_eq!(
        run.errors(),
        ["Duo refused this server's request: its clock is wrong. Tell your administrator."]
    );
    // The Date header has one-second resolution: 900 s, give or take the second it was read in.
    w.otpd.assert_logged("s ahead of Duo's");
    let log = w.otpd.log();
    let skew: Option<u64> = log
        .split("this host's clock is ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok());
    assert!(
        skew.is_some_and(|s| (899..=901).contains(&s)),
        "skew {skew:?} in {log}"
    );
    w.otpd
        .assert_logged("denied: Duo refused the request's Date, clock skew (preauth)");
}

#[test]
fn otpctl_default_duo_makes_duo_the_first_method_of_a_user_with_several() {
    if !ready() {
        return;
    }
    let w = world("approve", &[], "", "");
    w.otpd.enroll_totp(&me());
    // Two methods: the menu.
    let run = service(&w.otpd, "").login(&me(), &[]);
    assert!(
        run.prompts()[0].contains("2) Duo push, call or passcode"),
        "{run:?}"
    );
    let out = w.otpd.otpctl(&["--user", &me(), "default", "duo"]);
    assert!(out.status.success(), "{out:?}");
    let run = duo_login(&w, PASSCODE);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
}

#[test]
fn duo_failing_after_the_push_was_sent_denies_even_with_failmode_safe() {
    if !ready() {
        return;
    }
    let w = world("broken", &[], "failmode = \"safe\"", "");
    let run = duo_login(&w, "");
    assert_eq!(run.code, PAM_AUTH_ERR, "{run:?}");
    assert_eq!(run.errors(), ["Duo is unreachable; try again later."]);
    w.otpd.assert_logged("denied: Duo unreachable (push)");
}

#[test]
fn a_push_waiting_for_the_phone_does_not_hold_up_another_login() {
    if !ready() {
        return;
    }
    let w = world("silent", &[], "", "");
    // A: a push nobody answers; pam_otp gives up after 8 s.
    let slow = service(&w.otpd, "timeout=8");
    let mut waiting = slow.start(&me());
    assert_eq!(waiting.next_prompt().expect("the Duo prompt"), PROMPT);
    waiting.send("");
    loop {
        match w.server.next_event() {
            Event::Request { path, .. } if path == "/auth/v2/auth_status" => break,
            Event::Rejected(why) => panic!("{why}"),
            Event::Request { .. } => {}
        }
    }
    // B: logs in with a passcode while A's push is being polled.
    let other = duo_login(&w, PASSCODE);
    assert_eq!(other.code, PAM_SUCCESS, "{other:?}");
    let first = waiting.finish();
    assert_ne!(first.code, PAM_SUCCESS, "{first:?}");
    w.otpd.assert_logged("aborted: ");
    let log = w.otpd.log();
    let (allowed, aborted) = (log.find("allowed (Duo passcode)"), log.find("aborted: "));
    assert!(allowed.is_some() && allowed < aborted, "{log}");
}
