//! `[store] offline = "cached"` (issue 12): with the fleet's database stopped, a host takes a
//! fresh TOTP code of a user it has seen from its local sealed copy, never the same step twice
//! (not even across its own restart), refuses users it never saw and recovery codes with the
//! offline message, and writes the spent step back when the database returns, so another host
//! refuses it. The attacks: a sent code while offline, one code raced by many logins, and a
//! crash right after an offline login.

mod fleet_common;

use fleet_common::*;
use otp_e2e::pam::{PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::postgres::Cluster;
use otp_e2e::smtp::{self, email_section, SmtpOptions, SmtpServer, ADDRESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{me, PamService};
use std::sync::{Arc, Barrier};

/// A fleet whose hosts keep offline copies.
fn cached_fleet() -> (Arc<Cluster>, Fleet) {
    let cluster = Arc::new(Cluster::start());
    let mut fleet = Fleet::on(cluster.clone());
    fleet.store_toml.push_str("offline = \"cached\"\n");
    (cluster, fleet)
}

/// A user enrolled and seen once online by `host`, then the database stopped: the secret and
/// the recovery codes.
fn seen_then_cut_off(cluster: &Cluster, host: &otp_e2e::Daemon) -> (String, Vec<String>) {
    let (secret, codes) = enroll(host);
    let online = login(host, &code(&secret, now()));
    assert_eq!(online.code, PAM_SUCCESS, "{online:?}\n{}", host.log());
    cluster.stop();
    host.assert_logged("lost the database");
    (secret, codes)
}

#[test]
fn cached_logins_work_offline_once_per_step_and_are_written_back() {
    if !ready() {
        return;
    }
    let (cluster, fleet) = cached_fleet();
    let (mut a, b) = (fleet.host(), fleet.host());
    let (secret, codes) = seen_then_cut_off(&cluster, &a);
    // The next step (inside the skew window) is one the database never saw.
    let at = now() + 30;
    let fresh = code(&secret, at);
    let cached = login(&a, &fresh);
    assert_eq!(cached.code, PAM_SUCCESS, "{cached:?}\n{}", a.log());
    a.assert_logged("offline cached");
    let again = login(&a, &fresh);
    assert_ne!(again.code, PAM_SUCCESS, "a step spent offline worked twice");
    // B never saw the user: nothing to decide from.
    let unseen = login(&b, &fresh);
    assert_refused_with(&b, &unseen, "database cannot be reached");
    // Recovery codes need the database.
    let recovery = login(&a, &codes[0]);
    assert_refused_with(&a, &recovery, "database cannot be reached");

    // A restart while the database is down keeps the spent step.
    a.restart();
    let after_restart = login(&a, &fresh);
    assert_ne!(
        after_restart.code, PAM_SUCCESS,
        "a step spent offline worked again after a restart: {after_restart:?}"
    );

    cluster.pg_ctl_start();
    a.assert_logged("wrote back");
    let stored = cluster.psql(&fleet.db, "SELECT last_step FROM otpd_users");
    assert_eq!(stored.trim().parse::<u64>().ok(), Some(at / 30), "{stored}");
    let on_b = login(&b, &fresh);
    assert_ne!(
        on_b.code,
        PAM_SUCCESS,
        "B took the step A spent offline: {on_b:?}\n{}",
        b.log()
    );
}

#[test]
fn a_sent_code_needs_the_database() {
    if !ready() || !smtp::available() {
        return;
    }
    let smtp = SmtpServer::start(SmtpOptions::default(), None);
    let cluster = Arc::new(Cluster::start());
    let mut fleet = Fleet::on(cluster.clone());
    fleet.store_toml.push_str("offline = \"cached\"\n");
    // No resend cooldown: each login below would send at once.
    let a = fleet.host_with(&format!(
        "{}[code]\nresend_after = \"1ms\"\n[users.\"{}\"]\nemail = \"{ADDRESS}\"\n",
        email_section(smtp.port, "none", ""),
        me()
    ));
    // An app too, so the host keeps a copy and decides offline at all; the address already
    // counts as a factor, so the new key is proved with a mailed code.
    a.otpctl_json(&["send"]);
    a.enroll_totp_proving(&me(), &smtp.next_mail().code());
    let notice = smtp.next_mail();
    assert!(
        notice.body().contains("authenticator app"),
        "{}",
        notice.raw
    );

    // Seen online once, by email.
    let service = PamService::otp(&a, "");
    let online = choose_email(&service);
    let mailed = smtp.next_mail().code();
    let online = answer(online, &mailed);
    assert_eq!(online.code, PAM_SUCCESS, "{online:?}\n{}", a.log());

    // A code mailed just before the outage is no way in either.
    let mut before = choose_email(&service);
    let early = smtp.next_mail().code();
    cluster.stop();
    a.assert_logged("lost the database");
    before.send(&early);
    let late = before.finish();
    assert_refused_with(&a, &late, "database cannot be reached");

    // Offline, asking for a code sends nothing and says why.
    let mut offline = service.start(&me());
    let menu = offline.next_prompt().expect("a menu");
    assert!(menu.contains("2) email"), "{menu}");
    offline.send("2");
    let refused = offline.finish();
    assert_refused_with(&a, &refused, "database cannot be reached");
    assert!(!smtp.has_mail(), "a code was mailed offline: {refused:?}");
}

/// Start a login, pick email from the menu and wait until the code is said to be sent.
fn choose_email(service: &PamService) -> otp_e2e::pam::PamSession<'_> {
    let mut login = service.start(&me());
    let menu = login.next_prompt().expect("a menu");
    assert!(menu.contains("2) email"), "{menu}");
    login.send("2");
    let prompt = login.next_prompt().expect("the code prompt");
    assert!(prompt.contains("A code was sent"), "{prompt}");
    login
}

fn answer(mut login: otp_e2e::pam::PamSession<'_>, code: &str) -> otp_e2e::PamRun {
    login.send(code);
    login.finish()
}

#[test]
fn concurrent_offline_answers_with_one_code_accept_exactly_one() {
    if !ready() {
        return;
    }
    const LOGINS: usize = 8;
    let (cluster, fleet) = cached_fleet();
    let a = fleet.host();
    let (secret, _) = seen_then_cut_off(&cluster, &a);

    let fresh = code(&secret, now() + 30);
    let together = Barrier::new(LOGINS);
    let runs: Vec<otp_e2e::PamRun> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..LOGINS)
            .map(|_| {
                s.spawn(|| {
                    let service = PamService::otp(&a, "");
                    let mut login = service.start(&me());
                    // Every login waits at the prompt, so the answers reach otpd together.
                    login.next_prompt().expect("a prompt");
                    together.wait();
                    login.send(&fresh);
                    login.finish()
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|r| r.join().expect("a racing login"))
            .collect()
    });
    let won = runs.iter().filter(|r| r.code == PAM_SUCCESS).count();
    assert_eq!(won, 1, "{runs:#?}\n{}", a.log());
    // The others were judged and refused (replayed, or locked by the failures), not dropped.
    assert!(
        runs.iter()
            .all(|r| r.code == PAM_SUCCESS || r.code == PAM_AUTH_ERR),
        "{runs:#?}"
    );
}

#[test]
fn a_kill_after_an_offline_login_keeps_the_step_spent() {
    if !ready() {
        return;
    }
    let (cluster, fleet) = cached_fleet();
    let (mut a, b) = (fleet.host(), fleet.host());
    let (secret, _) = seen_then_cut_off(&cluster, &a);

    let at = now() + 30;
    let fresh = code(&secret, at);
    let cached = login(&a, &fresh);
    assert_eq!(cached.code, PAM_SUCCESS, "{cached:?}\n{}", a.log());
    // SIGKILL: nothing is saved on the way out, and a fleet host has no restart guard (the
    // database keeps its steps), so only what was on disk before the verdict refuses the step.
    a.restart_after_crash();
    let after_crash = login(&a, &fresh);
    assert_refused_with(&a, &after_crash, "already used");

    // The restarted otpd writes back what the killed one spent.
    cluster.pg_ctl_start();
    a.assert_logged("wrote back");
    let stored = cluster.psql(&fleet.db, "SELECT last_step FROM otpd_users");
    assert_eq!(stored.trim().parse::<u64>().ok(), Some(at / 30), "{stored}");
    let on_b = login(&b, &fresh);
    assert_refused_with(&b, &on_b, "already used");
}

/// The attack on the lazy note of online steps: a code accepted online, otpd killed at once
/// (its note of the step may not be on disk yet: it is written within a second, off the
/// login's path), the database down after the restart. The step must still be refused
/// offline: by the note if it was written, else by the restart guard the unclean stop raised.
#[test]
fn a_kill_right_after_an_online_login_still_refuses_that_step_offline() {
    if !ready() {
        return;
    }
    let (cluster, fleet) = cached_fleet();
    let mut a = fleet.host();
    let (secret, _) = enroll(&a);
    // A clean stop writes down that A has seen the user (a copy it may use offline).
    a.restart();
    let used = code(&secret, now());
    let online = login(&a, &used);
    assert_eq!(online.code, PAM_SUCCESS, "{online:?}\n{}", a.log());
    let mark = a.log_mark();
    a.restart_after_crash();
    a.assert_logged("did not stop cleanly");
    // The restarted otpd's listener is up, so it sees the database go.
    let listening = "listening for changes from other hosts";
    assert!(a.logged_since(mark, listening), "{}", a.log());
    cluster.stop();
    a.assert_logged("lost the database");
    let offline = login(&a, &used);
    assert_eq!(offline.code, PAM_AUTH_ERR, "{offline:?}\n{}", a.log());
    let said = offline.errors().join(" ");
    assert!(
        said.contains("already used") || said.contains("restarted"),
        "{said}"
    );
    eprintln!("measured: the killed host refused the step offline with {said:?}");
}
