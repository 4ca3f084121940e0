//! The audit trail through real logins and otpctl: `otpctl attempts` with its filters and
//! `show`, what a user may see of others' events, the JSON-lines file rotating and surviving a
//! SIGKILL mid-write, and the metrics file read by Prometheus' own text parser.

use otp_e2e::daemon::describe;
use otp_e2e::pam::{self, PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{me, skip, Daemon, PamService};
use serde_json::Value;
use std::path::Path;

/// A code that is not the current one (nor the neighbours the skew allows).
fn wrong(secret: &str) -> String {
    let near: Vec<String> = (-2i64..=2)
        .map(|d| code(secret, (now() as i64 + d * 30) as u64))
        .collect();
    (0..10)
        .map(|n| format!("{n}{n}{n}{n}{n}{n}"))
        .find(|c| !near.contains(c))
        .expect("a wrong code")
}

fn events(v: &Value) -> &Vec<Value> {
    v.as_array().expect("a list of events")
}

#[test]
fn attempts_lists_logins_newest_first_filters_them_and_shows_one_in_full() {
    if !pam::available() {
        return;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    let right = code(&secret, now());
    assert_eq!(service.login(&me(), &[&right]).code, PAM_SUCCESS);
    let bad = wrong(&secret);
    assert_eq!(service.login(&me(), &[&bad]).code, PAM_AUTH_ERR);

    let all = otpd.otpctl_json(&["attempts", "--since", "1h"]);
    let all = events(&all);
    let logins: Vec<&Value> = all.iter().filter(|e| e["kind"] == "login").collect();
    assert_eq!(logins.len(), 2, "{all:#?}");
    assert_eq!(logins[0]["result"], "denied", "newest first: {all:#?}");
    assert_eq!(logins[0]["reason"], "denied: wrong code");
    assert_eq!(logins[1]["result"], "allowed");
    assert_eq!(logins[1]["method"], "totp");
    assert_eq!(logins[1]["service"], "otp-test");
    assert_eq!(logins[1]["user"], me().as_str());
    // The enrollment and its confirmation are events too.
    assert!(all.iter().any(|e| e["kind"] == "enroll"), "{all:#?}");
    assert!(all.iter().any(|e| e["kind"] == "verify"), "{all:#?}");
    let text = serde_json::to_string(all).expect("json");
    for typed in [&right, &bad, &secret] {
        assert!(!text.contains(typed.as_str()), "{typed} in {text}");
    }

    let denied = otpd.otpctl_json(&["attempts", "--result", "denied"]);
    assert!(events(&denied).iter().all(|e| e["result"] == "denied"));
    assert!(!events(&denied).is_empty());
    let one = otpd.otpctl_json(&["attempts", "--limit", "1", "--user", &me()]);
    assert_eq!(events(&one).len(), 1);
    assert_eq!(events(&one)[0]["id"], all[0]["id"]);

    let id = logins[1]["id"].as_str().expect("id");
    let shown = otpd.otpctl(&["attempts", "show", id]);
    assert!(shown.status.success(), "{shown:?}");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains(&format!("id:         {id}")), "{shown}");
    assert!(shown.contains("result:     allowed"), "{shown}");
    assert!(shown.contains("service:    otp-test"), "{shown}");
    let missing = otpd.otpctl(&["attempts", "show", "no-such-id"]);
    assert!(!missing.status.success());
}

#[test]
fn a_user_sees_only_their_own_attempts() {
    if !pam::available() || !skip::require_root() {
        return;
    }
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    assert_eq!(
        service.login(&me(), &[&code(&secret, now())]).code,
        PAM_SUCCESS
    );
    let roots = otpd.otpctl_json(&["attempts"]);
    let id = events(&roots)[0]["id"].as_str().expect("id").to_owned();

    let own = otpd.otpctl_as_nobody(&["--json", "attempts"]);
    assert!(own.status.success(), "{own:?}");
    let own: Value = serde_json::from_slice(&own.stdout).expect("json");
    assert!(
        events(&own).iter().all(|e| e["user"] == "nobody"),
        "nobody sees only nobody's: {own:#?}"
    );
    let theirs = otpd.otpctl_as_nobody(&["attempts", "--user", &me()]);
    assert!(!theirs.status.success(), "{theirs:?}");
    assert!(String::from_utf8_lossy(&theirs.stderr).contains("permission denied"));
    let show = otpd.otpctl_as_nobody(&["attempts", "show", &id]);
    assert!(!show.status.success(), "{show:?}");
    assert!(String::from_utf8_lossy(&show.stderr).contains("no such event"));
    let stats = otpd.otpctl_as_nobody(&["stats"]);
    assert!(!stats.status.success(), "stats are for admins: {stats:?}");
}

/// Every line of every audit file: (parsed events, lines that did not parse).
fn read_files(state: &Path) -> (usize, Vec<String>, Vec<u64>) {
    let mut good = 0;
    let mut bad = Vec::new();
    let mut sizes = Vec::new();
    for name in [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2",
        "audit.jsonl.3",
    ] {
        let Ok(text) = std::fs::read_to_string(state.join(name)) else {
            continue;
        };
        sizes.push(text.len() as u64);
        for line in text.lines() {
            match serde_json::from_str::<Value>(line) {
                Ok(_) => good += 1,
                Err(_) => bad.push(line.to_owned()),
            }
        }
    }
    (good, bad, sizes)
}

#[test]
fn the_audit_file_rotates_by_size_and_stays_readable_after_sigkill_mid_write() {
    let mut otpd = Daemon::start("[audit]\nmax_file_size = 4096\nkeep = 2\n");
    let state = otpd.state_dir();
    // Each refused verify is one event; otpctl as fast as it goes, with otpd killed among them.
    let socket = otpd.socket.clone();
    let hammer = std::thread::spawn(move || {
        for _ in 0..60 {
            let _ = std::process::Command::new(otp_e2e::artifacts::otpctl())
                .arg("--socket")
                .arg(&socket)
                .args(["verify", "000000"])
                .output();
        }
    });
    otpd.assert_logged("otpctl");
    let before = std::fs::metadata(state.join("audit.jsonl")).map(|m| m.len());
    // SIGKILL in the middle of the burst.
    otpd.restart_after_crash();
    hammer.join().expect("hammer");
    assert!(before.is_ok(), "the file existed before the kill");
    // A write torn by the kill ends without a newline: leave one there for sure.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(state.join("audit.jsonl"))
        .expect("audit file");
    f.write_all(b"{\"id\":\"torn-by-a-kill\",\"ti")
        .expect("torn line");
    drop(f);
    otpd.restart_after_crash();
    otpd.assert_logged("the last line was torn");
    for _ in 0..40 {
        let _ = otpd.otpctl(&["verify", "000000"]);
    }
    let (good, bad, sizes) = read_files(&state);
    assert!(good >= 30, "{good} events");
    assert!(
        sizes.len() == 3,
        "current, .1 and .2 kept, no more: {sizes:?}"
    );
    assert!(sizes.iter().all(|s| *s <= 4096), "{sizes:?}");
    assert!(
        bad.iter().all(|l| l.contains("torn") || !l.ends_with('}')),
        "only torn lines fail to parse: {bad:?}"
    );
    // otpctl reads past them.
    let listed = otpd.otpctl_json(&["attempts", "--limit", "1000"]);
    assert!(events(&listed).len() >= 30, "{listed}");
}

#[test]
fn stats_count_logins_and_the_metrics_file_parses_as_prometheus_text() {
    if !pam::available()
        || !skip::require_file(
            "/usr/lib/python3/dist-packages/prometheus_client/parser.py",
            "python3-prometheus-client",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = dir.path().join("otpd.prom");
    let otpd = Daemon::start(&format!("[metrics]\ntextfile = {prom:?}\n"));
    let secret = otpd.enroll_totp(&me());
    let service = PamService::otp(&otpd, "");
    assert_eq!(
        service.login(&me(), &[&code(&secret, now())]).code,
        PAM_SUCCESS
    );
    let stats = otpd.otpctl_json(&["stats"]);
    let hour = stats["last_hour"].as_array().expect("last_hour");
    let login = hour
        .iter()
        .find(|c| c["kind"] == "login" && c["result"] == "allowed")
        .unwrap_or_else(|| panic!("{stats:#}"));
    assert_eq!(login["count"], 1);
    let text = otpd.otpctl(&["stats"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("Last hour:"));

    // The file is rewritten every 15 s: wait for one that has the login.
    let wanted = "otpd_audit_events_last_hour{kind=\"login\",result=\"allowed\",method=\"totp\"} 1";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let text = std::fs::read_to_string(&prom).unwrap_or_default();
        if text.contains(wanted) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never written:\n{text}"
        );
        // Waiting for otpd's next rewrite, which is on a 15 s clock of its own.
        otpd.logged("\u{1}never said");
    }
    let parse = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as f\n\
             for fam in f(open(sys.argv[1]).read()):\n  for s in fam.samples:\n    \
             print(fam.name, fam.type, s.labels['kind'], s.labels['result'], int(s.value))",
        ])
        .arg(&prom)
        .output()
        .expect("python3");
    assert!(parse.status.success(), "{parse:?}");
    let parsed = String::from_utf8_lossy(&parse.stdout);
    assert!(
        parsed.contains("otpd_audit_events_last_hour gauge login allowed 1"),
        "{parsed}"
    );
}

#[test]
fn the_failure_that_locks_a_user_out_is_followed_by_a_lockout_event() {
    let otpd = Daemon::start("[lockout]\nmax_failures = 3\n");
    let secret = otpd.enroll_totp(&me());
    let bad = wrong(&secret);
    for _ in 0..3 {
        let out = otpd.otpctl(&["verify", &bad]);
        assert!(!out.status.success());
    }
    let all = otpd.otpctl_json(&["attempts"]);
    let all = events(&all);
    let lockouts: Vec<&Value> = all.iter().filter(|e| e["kind"] == "lockout").collect();
    assert_eq!(lockouts.len(), 1, "{all:#?}");
    assert_eq!(all[0]["kind"], "lockout", "newest: {all:#?}");
    assert_eq!(
        all[1]["reason"], "wrong code",
        "the failure that locked: {all:#?}"
    );
    assert!(
        lockouts[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("locked for ")),
        "{all:#?}"
    );
    // While locked, refusals make no new lockout event.
    let _ = otpd.otpctl(&["verify", &bad]);
    let again = otpd.otpctl_json(&["attempts"]);
    let count = events(&again)
        .iter()
        .filter(|e| e["kind"] == "lockout")
        .count();
    assert_eq!(count, 1);
}

/// otpd writes a login's log line after its reply (so the reply does not wait for the log):
/// a client gone before the outcome must not cost the line, the event or the spent code.
#[test]
fn a_login_whose_client_hangs_up_before_the_outcome_is_logged_audited_and_spent() {
    use otp_proto::{Request, Secret};
    let otpd = Daemon::start("");
    let secret = otpd.enroll_totp(&me());
    let right = code(&secret, now());
    let mut conn = otpd.at_prompt(&me(), "hangs-up").expect("the code prompt");
    // otpd stopped, the answer sent and the client gone: otpd's reply cannot be delivered.
    let paused = otpd.pause();
    conn.send(&Request::Answer(Secret::new(right.clone())))
        .expect("answer");
    drop(conn);
    drop(paused);
    otpd.assert_logged("hangs-up: user=");
    assert!(
        otpd.log()
            .lines()
            .any(|l| l.contains("hangs-up: user=") && l.contains("allowed (totp)")),
        "{}",
        otpd.log()
    );
    let all = otpd.otpctl_json(&["attempts", "--user", &me()]);
    let theirs: Vec<&Value> = events(&all)
        .iter()
        .filter(|e| e["service"] == "hangs-up")
        .collect();
    assert_eq!(theirs.len(), 1, "{all:#?}");
    assert_eq!(theirs[0]["result"], "allowed", "{all:#?}");
    // The code was spent even though its outcome never arrived.
    let again = otpd.otpctl(&["verify", &right]);
    assert!(!again.status.success(), "{}", describe(&again));
}

/// The same through logins (session/login.rs): the wrong answer that locks the user out is
/// followed by one lockout event, and an allowed login makes none.
#[test]
fn the_login_that_locks_a_user_out_is_followed_by_a_lockout_event() {
    use otp_e2e::daemon::answer;
    let otpd = Daemon::start("[lockout]\nmax_failures = 3\n");
    let secret = otpd.enroll_totp(&me());
    let mut first = otpd.at_prompt(&me(), "locks").expect("the code prompt");
    assert!(answer(&mut first, &code(&secret, now())).is_some());
    let bad = wrong(&secret);
    for _ in 0..3 {
        let mut login = otpd.at_prompt(&me(), "locks").expect("the code prompt");
        assert!(answer(&mut login, &bad).is_some());
    }
    let all = otpd.otpctl_json(&["attempts"]);
    let all = events(&all);
    let lockouts: Vec<&Value> = all.iter().filter(|e| e["kind"] == "lockout").collect();
    assert_eq!(lockouts.len(), 1, "{all:#?}");
    assert_eq!(all[0]["kind"], "lockout", "newest: {all:#?}");
    assert_eq!(all[1]["service"], "locks", "{all:#?}");
    assert_eq!(
        all[1]["reason"], "denied: wrong code",
        "the login that locked: {all:#?}"
    );
}
