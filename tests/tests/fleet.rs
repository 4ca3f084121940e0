//! Fleets (issue 12): several otpd "hosts" (each its own state dir, socket and config) on one
//! real PostgreSQL (tests/src/postgres.rs: TLS from a test CA, a password file), logging in
//! through real libpam. Each story mounts what an attacker or an unlucky admin would: the same
//! code on a second host, guesses spread over hosts, ten hosts racing one code, a stale cache
//! after a disable, the database going away, a dump of it, and broken configurations.

mod fleet_common;

use fleet_common::*;
use otp_e2e::netns::{self, Netns};
use otp_e2e::pam::{PAM_AUTH_ERR, PAM_SUCCESS};
use otp_e2e::postgres::{self, Cluster};
use otp_e2e::totp::{code, now};
use otp_e2e::{artifacts, me, Daemon, PamService};
use std::process::Command;
use std::sync::Arc;

#[test]
fn enroll_on_a_log_in_on_b_and_the_same_code_on_a_is_refused() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let (a, b) = (fleet.host(), fleet.host());
    let (secret, _) = enroll(&a);
    let used = code(&secret, now());
    let on_b = login(&b, &used);
    assert_eq!(on_b.code, PAM_SUCCESS, "{on_b:?}\n{}", b.log());
    assert_refused_with(&a, &login(&a, &used), "already used");
    assert_refused_with(&b, &login(&b, &used), "already used");
}

#[test]
fn every_hosts_attempts_are_listed_on_every_host() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let (a, b) = (fleet.host(), fleet.host());
    let (secret, _) = enroll(&a);
    let on_b = login(&b, &code(&secret, now()));
    assert_eq!(on_b.code, PAM_SUCCESS, "{on_b:?}\n{}", b.log());
    assert_refused_with(&a, &login(&a, "000000x"), "Invalid code");
    // The login on B and the refusal on A, seen from both (each host's own file has only one).
    for host in [&a, &b] {
        let all = host.otpctl_json(&["attempts", "--user", &me()]);
        let logins: Vec<&serde_json::Value> = (all.as_array().expect("events").iter())
            .filter(|e| e["kind"] == "login")
            .collect();
        // Both hosts may have logged in the same second: no order between them is promised.
        let mut results: Vec<&str> = logins.iter().filter_map(|e| e["result"].as_str()).collect();
        results.sort_unstable();
        assert_eq!(results, ["allowed", "denied"], "{all:#}");
        let id = logins[0]["id"].as_str().expect("id");
        let shown = host.otpctl(&["attempts", "show", id]);
        assert!(shown.status.success(), "{}", text(&shown));
    }
}

#[test]
fn grace_fleet_shares_grace_across_hosts_and_a_failed_code_anywhere_ends_it() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let grace = "[policy]\ngrace = \"1h\"\ngrace_fleet = true\n";
    let (a, b) = (fleet.host_with(grace), fleet.host_with(grace));
    let (secret, _) = enroll(&a);
    let r = otp_e2e::pam::From {
        rhost: Some("192.0.2.7"),
        ..Default::default()
    };
    let (on_a, on_b) = (PamService::otp(&a, ""), PamService::otp(&b, ""));
    let first = on_a.login_from(&r, &me(), &[&code(&secret, now())]);
    assert_eq!(first.code, PAM_SUCCESS, "{first:?}\n{}", a.log());
    // B never saw a code from this user: the fleet's grace lets the login in.
    let graced = on_b.login_from(&r, &me(), &[]);
    assert_eq!(graced.code, PAM_SUCCESS, "{graced:?}\n{}", b.log());
    assert!(graced.prompts().is_empty(), "{graced:?}");
    b.assert_logged("allowed (grace)");
    // A wrong code on B (from elsewhere) ends the grace on A too.
    let elsewhere = otp_e2e::pam::From {
        rhost: Some("198.51.100.3"),
        ..Default::default()
    };
    let wrong = on_b.login_from(&elsewhere, &me(), &["000000x"]);
    assert_eq!(wrong.code, PAM_AUTH_ERR, "{wrong:?}");
    let asked = on_a.login_from(&r, &me(), &[]);
    assert_ne!(asked.code, PAM_SUCCESS, "{asked:?}\n{}", a.log());
    assert!(
        asked.prompts().iter().any(|p| p.contains("code")),
        "{asked:?}"
    );
    // grace_fleet without the fleet store is refused by check-config.
    let out = fleet.otpd("[policy]\ngrace_fleet = true\n", &["check-config"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("grace_fleet"), "{}", text(&out));
}

#[test]
fn wrong_codes_spread_over_two_hosts_lock_both_even_after_restarts() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let (mut a, mut b) = (fleet.host(), fleet.host());
    let (secret, _) = enroll(&a);
    // 5 wrong answers, alternating: neither host alone saw its own max_failures (5).
    for i in 0..5 {
        let host = if i % 2 == 0 { &a } else { &b };
        assert_refused_with(host, &login(host, "000000x"), "Invalid code");
    }
    let right = code(&secret, now());
    assert_refused_with(&b, &login(&b, &right), "Too many failed attempts");
    assert_refused_with(&a, &login(&a, &right), "Too many failed attempts");
    a.restart();
    b.restart();
    let right = code(&secret, now());
    assert_refused_with(&a, &login(&a, &right), "Too many failed attempts");
    assert_refused_with(&b, &login(&b, &right), "Too many failed attempts");
    // Root's unlock on one host lifts it for the fleet. (The codes typed while locked were
    // spent by each host's own replay memory: the next step's code is the one to type.)
    let out = a.otpctl(&["--user", &me(), "unlock"]);
    assert!(out.status.success(), "unlock: {}", text(&out));
    let on_b = login(&b, &code(&secret, now() + 30));
    assert_eq!(on_b.code, PAM_SUCCESS, "{on_b:?}\n{}", b.log());
}

#[test]
fn an_unlock_on_a_lifts_the_lock_b_counted_itself() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let (a, b) = (fleet.host(), fleet.host());
    let (secret, _) = enroll(&a);
    // Every wrong answer on B: B's own count locks it, as well as the fleet's.
    for _ in 0..5 {
        assert_refused_with(&b, &login(&b, "000000x"), "Invalid code");
    }
    assert_refused_with(
        &b,
        &login(&b, &code(&secret, now())),
        "Too many failed attempts",
    );
    let out = a.otpctl(&["--user", &me(), "unlock"]);
    assert!(out.status.success(), "unlock: {}", text(&out));
    b.assert_logged("unlocked; local failures cleared");
    let on_b = login(&b, &code(&secret, now() + 30));
    assert_eq!(on_b.code, PAM_SUCCESS, "{on_b:?}\n{}", b.log());
}

#[test]
fn a_recovery_code_used_on_a_is_refused_on_b() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let (a, b) = (fleet.host(), fleet.host());
    let (_, codes) = enroll(&a);
    // B reads (and caches) the record with all eight codes before A spends one.
    let status = b.otpctl_json(&["--user", &me(), "status"]);
    assert!(!status.is_null());
    let on_a = login(&a, &codes[0]);
    assert_eq!(on_a.code, PAM_SUCCESS, "{on_a:?}\n{}", a.log());
    let on_b = login(&b, &codes[0]);
    assert_eq!(
        on_b.code, PAM_AUTH_ERR,
        "a spent recovery code worked on B: {on_b:?}"
    );
    let next = login(&b, &codes[1]);
    assert_eq!(next.code, PAM_SUCCESS, "{next:?}\n{}", b.log());
}

#[test]
fn ten_hosts_racing_one_code_exactly_one_accepts() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let hosts: Vec<Daemon> = (0..10).map(|_| fleet.host()).collect();
    let (secret, _) = enroll(&hosts[0]);
    let c = code(&secret, now());
    let services: Vec<PamService> = hosts.iter().map(|h| PamService::otp(h, "")).collect();
    let barrier = std::sync::Barrier::new(services.len());
    let results: Vec<i32> = std::thread::scope(|s| {
        let runs: Vec<_> = services
            .iter()
            .map(|service| {
                let (c, barrier) = (&c, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    service.login(&me(), &[c]).code
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("login")).collect()
    });
    let accepted = results.iter().filter(|&&c| c == PAM_SUCCESS).count();
    assert_eq!(accepted, 1, "results: {results:?}");
}

/// Guesses at once over two hosts: each host lets its own `max_failures` (5) through to be
/// checked, and the database, deciding each under the user's row lock, judges no more than 5
/// of the 10 fleet-wide; the rest, and then the right code, are "locked". To make the 10
/// meet in the database, a table lock held here stops them all there, then lets them go.
#[test]
fn ten_guesses_at_once_over_two_hosts_are_judged_at_most_max_failures_times() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let hosts = [fleet.host(), fleet.host()];
    let (secret, _) = enroll(&hosts[0]);
    let services: Vec<PamService> = hosts.iter().map(|h| PamService::otp(h, "")).collect();
    let held = fleet
        .cluster
        .hold(&fleet.db, "LOCK TABLE otpd_failures IN EXCLUSIVE MODE");
    wait_for("the table lock held", || {
        count(
            &fleet,
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE c.relname = 'otpd_failures' AND l.mode = 'ExclusiveLock' AND l.granted",
        ) == 1
    });
    let runs: Vec<otp_e2e::PamRun> = std::thread::scope(|s| {
        let guesses: Vec<_> = (0..10)
            .map(|i| {
                let service = &services[i % 2];
                s.spawn(move || service.login(&me(), &["000000x"]))
            })
            .collect();
        wait_for("all 10 guesses waiting in the database", || {
            count(
                &fleet,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND application_name = 'otpd' AND wait_event_type = 'Lock'",
            ) == 10
        });
        held.release();
        guesses
            .into_iter()
            .map(|g| g.join().expect("login"))
            .collect()
    });
    let said = |run: &otp_e2e::PamRun, words: &str| run.errors().iter().any(|e| e.contains(words));
    let judged = runs.iter().filter(|r| said(r, "Invalid code")).count();
    let locked = runs
        .iter()
        .filter(|r| said(r, "Too many failed attempts"))
        .count();
    assert!(runs.iter().all(|r| r.code == PAM_AUTH_ERR), "{runs:#?}");
    assert_eq!((judged, locked), (5, 5), "{runs:#?}");
    let right = login(&hosts[1], &code(&secret, now()));
    assert_refused_with(&hosts[1], &right, "Too many failed attempts");
}

#[test]
fn disable_on_a_is_seen_by_b_at_once() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let (a, b) = (fleet.host(), fleet.host());
    let (secret, codes) = enroll(&a);
    let first = login(&b, &code(&secret, now()));
    assert_eq!(first.code, PAM_SUCCESS, "{first:?}\n{}", b.log());
    // B has the record cached now. Root disables on A.
    let started = std::time::Instant::now();
    let out = a.otpctl(&["--user", &me(), "disable", "totp", "--code", &codes[0]]);
    assert!(out.status.success(), "disable: {}", text(&out));
    b.assert_logged("changed; cached record dropped");
    let seen = started.elapsed();
    eprintln!(
        "measured: B dropped its cached record {} ms after the disable on A",
        seen.as_millis()
    );
    let after = login(&b, &code(&secret, now() + 30));
    assert_ne!(
        after.code, PAM_SUCCESS,
        "B still took a disabled key: {after:?}"
    );
}

#[test]
fn the_database_down_denies_with_a_message_and_its_return_needs_no_restart() {
    if !ready() {
        return;
    }
    let cluster = Arc::new(Cluster::start());
    let fleet = Fleet::on(cluster.clone());
    let a = fleet.host();
    let (secret, _) = enroll(&a);
    cluster.stop();
    a.assert_logged("lost the database");
    let started = std::time::Instant::now();
    let down = login(&a, &code(&secret, now()));
    eprintln!(
        "measured: a login with the database down denied in {} ms",
        started.elapsed().as_millis()
    );
    assert_refused_with(&a, &down, "database cannot be reached");
    a.assert_logged("denied: database unreachable");
    cluster.pg_ctl_start();
    a.assert_logged("the database is back");
    let back = login(&a, &code(&secret, now()));
    assert_eq!(back.code, PAM_SUCCESS, "{back:?}\n{}", a.log());
}

/// The network, not the database, fails: the host is in a network namespace whose veth link
/// to the database is cut, so packets vanish and nothing refuses the connection (a dead
/// switch, a firewall dropping). The login must still deny within the PAM timeout, with the
/// message, and work again once the link is back, with no restart.
#[test]
fn a_cut_network_link_denies_with_a_message_and_mending_it_needs_no_restart() {
    if !ready() || !netns::available() {
        return;
    }
    let ns = Netns::create();
    let cluster = Arc::new(Cluster::start_listening(&[&ns.host_ip]));
    let mut fleet = Fleet::on(cluster.clone());
    fleet.store_toml = cluster.store_toml_at(&ns.host_ip, &fleet.db);
    let a = fleet.host_under("", ns.wrap());
    // Enrolled through the link: the host reaches the database from inside.
    let (secret, _) = enroll(&a);
    ns.cut();
    let started = std::time::Instant::now();
    let down = login(&a, &code(&secret, now()));
    eprintln!(
        "measured: a login over the cut link denied in {} ms",
        started.elapsed().as_millis()
    );
    assert_refused_with(&a, &down, "database cannot be reached");
    a.assert_logged("denied: database unreachable");
    ns.mend();
    // The next step's code: the cut login's was spent by the host's own replay memory.
    let back = login(&a, &code(&secret, now() + 30));
    assert_eq!(back.code, PAM_SUCCESS, "{back:?}\n{}", a.log());
}

#[test]
fn a_dump_of_the_database_holds_no_secret() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let a = fleet.host();
    let (secret, codes) = enroll(&a);
    let dump = fleet.cluster.dump(&fleet.db);
    assert!(dump.contains("sealed:v1:"), "the record is in the dump");
    assert!(
        !dump.contains(&secret),
        "the base32 secret is in pg_dump's output"
    );
    for c in &codes {
        assert!(!dump.contains(c.as_str()), "a recovery code is in the dump");
    }
}

#[test]
fn check_config_reports_the_schema_and_names_each_error() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    let port = fleet.cluster.port;
    let db = &fleet.db;
    let ok = fleet.otpd(&fleet.store(), &["check-config"]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("schema version 5"), "{}", text(&ok));

    let cases: Vec<(String, &str)> = vec![
        (
            fleet.cluster.store_toml_with("mysql://otpd@127.0.0.1/otp"),
            "url must start with postgresql://",
        ),
        (
            fleet
                .cluster
                .store_toml_with(&format!("postgresql://otpd:hunter2@127.0.0.1:{port}/{db}")),
            "must not contain a password",
        ),
        (
            fleet.cluster.store_toml_with(&format!(
                "postgresql://otpd@localhost:{port}/{db}?sslmode=verify-full"
            )),
            "not valid for name",
        ),
        (
            fleet.cluster.store_toml_with(&format!(
                "postgresql://otpd@127.0.0.1:{}/{db}",
                postgres::free_port()
            )),
            "cannot be reached",
        ),
    ];
    for (store, expected) in &cases {
        let out = fleet.otpd(store, &["check-config"]);
        assert!(!out.status.success(), "{store}: accepted");
        assert!(text(&out).contains(expected), "{store}: {}", text(&out));
    }

    // A wrong password.
    let wrong = fleet.dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-it\n").unwrap();
    let mut perms = std::fs::metadata(&wrong).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&wrong, perms).unwrap();
    let store = fleet.store().replace(
        &format!("{:?}", fleet.cluster.password_file),
        &format!("{wrong:?}"),
    );
    let out = fleet.otpd(&store, &["check-config"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("password authentication failed"),
        "{}",
        text(&out)
    );

    // An old schema: the version row set back, as a database last migrated by an older otpd.
    fleet.cluster.psql(db, "UPDATE otpd_schema SET version = 1");
    let out = fleet.otpd(&fleet.store(), &["check-config"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("schema version 1, but this otpd knows version 5"),
        "{}",
        text(&out)
    );
    fleet.cluster.psql(db, "UPDATE otpd_schema SET version = 6");
    let out = fleet.otpd(&fleet.store(), &["check-config"]);
    assert!(text(&out).contains("newer"), "{}", text(&out));
    fleet.cluster.psql(db, "UPDATE otpd_schema SET version = 5");
}

#[test]
fn migrate_from_files_copies_a_hosts_enrollments_once() {
    if !ready() {
        return;
    }
    let fleet = Fleet::on(Cluster::shared());
    // A host on its own state directory, with an enrollment, stopped for the move.
    let mut old = Daemon::start("");
    let secret = old.enroll_totp(&me());
    let used = code(&secret, now());
    let run = login(&old, &used);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}");
    old.stop();
    std::fs::copy(&old.key_file, &fleet.key).expect("the host's key becomes the fleet's");
    let config = old.dir().join("to-postgres.toml");
    let toml = std::fs::read_to_string(&old.config).expect("config");
    std::fs::write(&config, format!("{toml}\n{}", fleet.store())).expect("config");
    let migrate = || {
        Command::new(artifacts::otpd())
            .arg("--config")
            .arg(&config)
            .args(["migrate", "--from", "files", "--to", "postgres"])
            .output()
            .expect("otpd migrate")
    };
    let first = migrate();
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("1 copied, 0 skipped"),
        "{}",
        text(&first)
    );
    let again = migrate();
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("0 copied, 1 skipped"),
        "{}",
        text(&again)
    );
    // Another host of the fleet: the code used on the old host is spent, the next one works.
    let b = fleet.host();
    assert_refused_with(&b, &login(&b, &used), "already used");
    let next = login(&b, &code(&secret, now() + 30));
    assert_eq!(next.code, PAM_SUCCESS, "{next:?}\n{}", b.log());
}

#[test]
fn the_resend_cooldown_and_the_hourly_quota_count_across_hosts() {
    if !ready() || !otp_e2e::smtp::available() {
        return;
    }
    use otp_e2e::inbox::Inbox;
    let server = otp_e2e::smtp::SmtpServer::start(Default::default(), None);
    let fleet = Fleet::on(Cluster::shared());
    let mailing = format!(
        "{}\n[code]\nresend_after = \"60s\"\nmax_sends_per_hour = 2\n[users.\"{}\"]\nemail = \"{}\"\n",
        server.config(),
        me(),
        otp_e2e::smtp::ADDRESS
    );
    let (a, b) = (fleet.host_with(&mailing), fleet.host_with(&mailing));
    let sent = a.otpctl(&["send"]);
    assert!(sent.status.success(), "{}", text(&sent));
    server.next_mail();
    // At once on B: the cooldown started on A.
    let cooling = b.otpctl(&["send"]);
    assert!(
        !cooling.status.success(),
        "B sent within A's cooldown: {}",
        text(&cooling)
    );
    // Past the cooldown: B sends the second of the hour, and then neither host sends a third.
    fleet
        .cluster
        .psql(&fleet.db, "UPDATE otpd_sends SET at = at - 120");
    let second = b.otpctl(&["send"]);
    assert!(second.status.success(), "{}", text(&second));
    server.next_mail();
    fleet
        .cluster
        .psql(&fleet.db, "UPDATE otpd_sends SET at = at - 120");
    for host in [&a, &b] {
        let third = host.otpctl(&["send"]);
        assert!(
            !third.status.success(),
            "a third send in the hour: {}",
            text(&third)
        );
        assert!(
            text(&third).to_lowercase().contains("too many"),
            "{}",
            text(&third)
        );
    }
}

#[test]
fn after_the_primary_fails_over_to_its_standby_logins_resume_and_no_code_is_reused() {
    if !ready() {
        return;
    }
    let primary = Arc::new(Cluster::start());
    let mut fleet = Fleet::on(primary.clone());
    let standby = primary.standby();
    fleet.store_toml = primary.store_toml_with(&format!(
        "postgresql://otpd@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write&sslmode=verify-full",
        primary.port, standby.port, fleet.db
    ));
    let (a, b) = (fleet.host(), fleet.host());
    let (secret, _) = enroll(&a);
    let used = code(&secret, now());
    let before = login(&a, &used);
    assert_eq!(before.code, PAM_SUCCESS, "{before:?}\n{}", a.log());

    primary.stop();
    standby.promote();
    let switched = std::time::Instant::now();
    // The first answers after the switch may meet a connection to the old primary that is
    // not known to be dead yet: wait (at most 10 s, the bound) for one that is judged.
    let replay = loop {
        let run = login(&b, &used);
        let unreachable = run.errors().iter().any(|e| e.contains("cannot be reached"));
        if !unreachable || switched.elapsed() > std::time::Duration::from_secs(10) {
            break run;
        }
    };
    eprintln!(
        "measured: logins judged again {} ms after the standby was promoted",
        switched.elapsed().as_millis()
    );
    assert_refused_with(&b, &replay, "already used");
    let next = login(&a, &code(&secret, now() + 30));
    assert_eq!(next.code, PAM_SUCCESS, "{next:?}\n{}", a.log());
}

/// `[store] commit = "fast"`: a right TOTP code's spent step commits without waiting for the
/// WAL flush, so a crash of the database may lose it. The attack: the code a user typed on A
/// just before the database crashed, replayed on B once it is back. The fleet's restart guard
/// must refuse it (and every code that could have been valid before the crash) on every host,
/// unspent and uncounted, while a locked user learns nothing from it, and end on time.
#[test]
fn with_fast_commits_a_database_crash_guards_the_codes_from_before_it_on_every_host() {
    if !ready() {
        return;
    }
    let cluster = Arc::new(Cluster::start());
    let mut fleet = Fleet::on(cluster.clone());
    fleet.store_toml.push_str("commit = \"fast\"\n");
    let (a, b) = (fleet.host(), fleet.host());
    let (secret, _) = enroll(&a);
    let used = code(&secret, now());
    let first = login(&a, &used);
    assert_eq!(first.code, PAM_SUCCESS, "{first:?}\n{}", a.log());
    let sql = |q: &str| cluster.psql(&fleet.db, q).trim().to_owned();
    // Marked, durably, before the first fast commit: a crash from now on is guarded.
    assert_eq!(sql("SELECT fast_seen FROM otpd_server"), "t");
    // What a crash before the WAL writer's flush loses is the spent step: the row set back
    // by hand, as such a crash leaves it (a commit flushed in time would be "already used").
    sql("UPDATE otpd_users SET last_step = last_step - 1");

    cluster.stop();
    b.assert_logged("lost the database");
    cluster.pg_ctl_start();
    b.assert_logged("the database is back");
    let replay = login(&b, &used);
    assert_refused_with(&b, &replay, "restarted");
    b.assert_logged("denied: code from before an unclean restart (not counted)");
    let from: u64 = sql("SELECT guard_from FROM otpd_server")
        .parse()
        .expect("guard_from set");
    // The next step's code could have been typed before the crash too (skew 1): guarded.
    let next = code(&secret, from + 30);
    assert_refused_with(&b, &login(&b, &next), "restarted");
    assert_eq!(
        sql("SELECT count(*) FROM otpd_failures"),
        "0",
        "guarded is not counted"
    );

    // Locked (5 wrong codes), a guarded right code says "locked", not "right, but wait".
    for _ in 0..5 {
        assert_refused_with(&b, &login(&b, "000000x"), "Invalid code");
    }
    assert_refused_with(&a, &login(&a, &next), "Too many failed attempts");
    let out = a.otpctl(&["--user", &me(), "unlock"]);
    assert!(out.status.success(), "unlock: {}", text(&out));

    // The guard covers the steps up to `from`'s plus the skew, and no further.
    let until = (from / 30 + 2) * 30;
    assert!(
        until <= now() + 61,
        "guard_from {from} is not from this run"
    );
    while now() < until {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let after = login(&b, &code(&secret, now()));
    assert_eq!(after.code, PAM_SUCCESS, "{after:?}\n{}", b.log());
}
