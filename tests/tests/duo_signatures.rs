//! The Duo-shaped server is only worth its stories if it checks signatures as Duo does: Duo's
//! own reference client (duo_client) passes it, a request altered after signing gets Duo's 401,
//! and otpd's requests pass it (`otpd check-config` calls /auth/v2/check). A Date too far from
//! the server's clock is refused, and otpd says it is the clock.

use otp_e2e::duo::{self, DuoServer, Event, SecretKey, IKEY, SKEY};
use otp_e2e::Daemon;
use std::process::Command;

/// Run `code` with duo_client against `server`; its stdout.
fn python(server: &DuoServer, code: &str) -> String {
    let prelude = format!(
        "import duo_client, json, http.client, ssl, base64, email.utils\n\
         IKEY, SKEY, HOST, PORT, CA = {IKEY:?}, {SKEY:?}, 'localhost', {}, {:?}\n\
         auth = duo_client.Auth(IKEY, SKEY, HOST, ca_certs=CA, port=PORT)\n",
        server.port,
        server.ca.ca.display().to_string()
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &format!("{prelude}{code}")])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn duos_reference_client_passes_and_a_request_altered_after_signing_gets_duos_401() {
    if !duo::available() {
        return;
    }
    let server = DuoServer::start("approve", &[]);
    // The reference client reads the server's replies as Duo's: preauth, a sync passcode, an
    // async push and its auth_status long poll.
    let out = python(
        &server,
        "print(auth.check()['time'] > 0, auth.preauth(username='alice')['result'])\n\
         print(auth.auth('passcode', username='alice', passcode='123456')['result'])\n\
         txid = auth.auth('push', username='alice', device='auto', async_txn=True)['txid']\n\
         s = auth.auth_status(txid)\n\
         print(s['waiting'] or s['success'], s['status'])",
    );
    assert_eq!(out.trim(), "True auth\nallow\nTrue allow");
    // Sign a preauth for alice, send one for mallory with the same credentials.
    let tampered = python(
        &server,
        "date = email.utils.formatdate()\n\
         signed = duo_client.client.sign(IKEY, SKEY, 'POST', HOST, '/auth/v2/preauth', date, 5, {},\n\
             body='{\"username\":\"alice\"}')\n\
         ctx = ssl.create_default_context(cafile=CA)\n\
         c = http.client.HTTPSConnection(HOST, PORT, context=ctx)\n\
         c.request('POST', '/auth/v2/preauth', body='{\"username\":\"mallory\"}',\n\
             headers={'Authorization': signed, 'Date': date, 'Content-Type': 'application/json'})\n\
         r = c.getresponse()\n\
         print(r.status, json.loads(r.read())['code'])",
    );
    assert_eq!(tampered.trim(), "401 40103");
    let wrong_key = python(
        &server,
        "bad = duo_client.Auth(IKEY, 'not-the-key', HOST, ca_certs=CA, port=PORT)\n\
         try:\n    bad.check()\nexcept RuntimeError as e:\n    print(e.status, e.data)",
    );
    assert!(wrong_key.starts_with("401 "), "{wrong_key}");
    assert!(wrong_key.contains("40103"), "{wrong_key}");
    let paths: Vec<String> = (0..5)
        .map(|_| match server.next_event() {
            Event::Request { path, .. } => path,
            Event::Rejected(why) => panic!("the reference client was rejected: {why}"),
        })
        .collect();
    assert_eq!(
        paths,
        [
            "/auth/v2/check",
            "/auth/v2/preauth",
            "/auth/v2/auth",
            "/auth/v2/auth",
            "/auth/v2/auth_status"
        ]
    );
    assert_eq!(
        server.next_event(),
        Event::Rejected("signature does not verify".into())
    );
}

/// `otpd check-config` on a config with `[duo]`.
fn check_config(otpd: &Daemon) -> std::process::Output {
    Command::new(otp_e2e::artifacts::otpd())
        .args(["--config"])
        .arg(&otpd.config)
        .arg("check-config")
        .output()
        .expect("otpd check-config")
}

fn daemon_for(server: &DuoServer, skey: &SecretKey) -> Daemon {
    Daemon::start(&duo::section(&server.host(), skey, &server.ca.ca, ""))
}

#[test]
fn check_config_calls_duos_check_with_a_request_the_reference_verification_accepts() {
    if !duo::available() {
        return;
    }
    let server = DuoServer::start("approve", &[]);
    let skey = SecretKey::new(SKEY);
    let otpd = daemon_for(&server, &skey);
    let out = check_config(&otpd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains(&format!("Duo check ok (integration {IKEY}")),
        "{stdout}"
    );
    match server.next_event() {
        Event::Request { method, path, .. } => {
            assert_eq!((&*method, &*path), ("GET", "/auth/v2/check"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn check_config_with_the_wrong_secret_key_reports_duos_refusal() {
    if !duo::available() {
        return;
    }
    let server = DuoServer::start("approve", &[]);
    let skey = SecretKey::new("not-the-secret-key");
    let otpd = daemon_for(&server, &skey);
    let out = check_config(&otpd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("code 40103: Invalid signature in request credentials"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-the-secret-key"),
        "the key is never shown"
    );
    assert_eq!(
        server.next_event(),
        Event::Rejected("signature does not verify".into())
    );
}

#[test]
fn a_date_skewed_beyond_what_duo_allows_is_refused_and_reported_as_the_clock() {
    if !duo::available() {
        return;
    }
    // Duo's clock 15 minutes ahead of ours: our Date is 900 s in Duo's past.
    let server = DuoServer::start("approve", &["--clock-offset", "900"]);
    let skey = SecretKey::new(SKEY);
    let otpd = daemon_for(&server, &skey);
    let out = check_config(&otpd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("Duo refused the request's Date: this host's clock is")
            && stderr.contains("s behind Duo's")
            && stderr.contains("fix the clock (NTP)"),
        "{stderr}"
    );
    match server.next_event() {
        Event::Rejected(why) => assert!(why.contains("from this server's clock"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_secret_key_file_others_can_read_is_refused_by_check_config() {
    if !duo::available() {
        return;
    }
    let server = DuoServer::start("approve", &[]);
    let skey = SecretKey::new(SKEY);
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    std::fs::set_permissions(skey.path(), readable).unwrap();
    let config = tempfile::tempdir().unwrap();
    let path = config.path().join("otpd.toml");
    let key = config.path().join("key");
    otp_e2e::daemon::keygen(&key);
    std::fs::write(
        &path,
        format!(
            "key_file = {key:?}\n{}",
            duo::section(&server.host(), &skey, &server.ca.ca, "")
        ),
    )
    .unwrap();
    let out = Command::new(otp_e2e::artifacts::otpd())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("[duo] secret_key_file") && stderr.contains("mode 0644"),
        "{stderr}"
    );
    assert!(server.events().is_empty(), "nothing was sent with it");
}
