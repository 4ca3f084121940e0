//! `otpctl config`: the configuration in force with each value's origin, and none of the test
//! configuration's secrets (each one grepped for in the output), for admins only.

use otp_e2e::{skip, Daemon};
use std::os::unix::fs::PermissionsExt;

const SECRETS: &[&str] = &[
    "AC0123456789abcdef0123456789abcdef", // Twilio account SID
    "smtp-login-name",                    // SMTP user name
    "Bearer gw-token-31337",              // a header of the custom gateway
    "gw-key-4242",                        // an API key in the gateway's URL
    "tmpl-key-777",                       // and one in its template
    "carol@example.com",                  // an address in [users]
    "+12025550199",                       // a number in [users]
];

fn secret_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("secret file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("0600");
    path
}

#[test]
fn otpctl_config_shows_origins_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = secret_file(dir.path(), "twilio-token", "twilio-token-value-9999");
    let password = secret_file(dir.path(), "smtp-password", "smtp-password-value-8888");
    let config = format!(
        "[lockout]\nmax_failures = 7\n\
         [email]\nhost = \"127.0.0.1\"\nport = 2525\ntls = \"none\"\nfrom = \"otp@example.com\"\n\
         username = \"smtp-login-name\"\npassword_file = {password:?}\n\
         [sms]\nprovider = \"twilio\"\n{}\
         [sms.custom]\nurl = \"https://gw.example/send?key=gw-key-4242\"\n\
         template = \"to={{{{mobile}}}}&text={{{{body}}}}&k=tmpl-key-777\"\n\
         headers = {{ Authorization = \"Bearer gw-token-31337\" }}\n\
         [users.carol]\nemail = \"carol@example.com\"\nphone = \"+12025550199\"\n\
         [[policy.rule]]\ngroups = [\"contractors\"]\nmethods = [\"totp\"]\n",
        otp_e2e::sms::twilio_section("http://127.0.0.1:9", &token)
    );
    let otpd = Daemon::start(&config);
    let out = otpd.otpctl(&["config"]);
    assert!(out.status.success(), "{out:?}\n{}", otpd.log());
    let text = String::from_utf8_lossy(&out.stdout);
    for secret in SECRETS
        .iter()
        .chain(&["twilio-token-value", "smtp-password-value"])
    {
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key}:\n{text}"))
            .to_owned()
    };
    let file = otpd.config.display().to_string();
    // Daemon::start writes socket, state_dir and key_file on lines 1 to 3.
    assert!(
        line("lockout.max_failures").contains(&format!("= 7    # {file}:5")),
        "{text}"
    );
    assert!(line("lockout.window").ends_with("# default"), "{text}");
    assert!(line("email.username").contains("<redacted>"), "{text}");
    assert!(
        line("sms.twilio.account_sid").contains("<redacted>"),
        "{text}"
    );
    // Paths to secret files are no secret.
    assert!(
        line("sms.twilio.auth_token_file").contains("twilio-token"),
        "{text}"
    );
    assert!(line("policy.rule[1].methods").contains("Totp"), "{text}");
    let json = otpd.otpctl(&["--json", "config"]);
    let json = String::from_utf8_lossy(&json.stdout);
    for secret in SECRETS {
        assert!(!json.contains(secret), "{secret} in JSON");
    }
    if skip::is_root() {
        let nobody = otpd.otpctl_as_nobody(&["config"]);
        assert!(!nobody.status.success(), "admins only: {nobody:?}");
    }
}
