//! `[[policy.rule]]` at real libpam logins, for real Unix users in real groups (groupadd,
//! useradd, usermod; removed when each test ends): a TOTP-only rule for a group, primary or
//! supplementary, an exempt rule for one service account through one PAM service, and the
//! methods a rule does not count refused by `otpctl enroll`.

use otp_e2e::pam::{self, PAM_SUCCESS};
use otp_e2e::totp::{code, now};
use otp_e2e::{skip, Daemon, PamService};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A name no other test (or earlier run) uses: `prefix`, this process, a counter.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Unix group, removed on drop (after the users the test made, which are dropped first).
struct Group(String);

impl Group {
    fn create() -> Group {
        let name = unique("ptg");
        run("groupadd", &[&name]);
        Group(name)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.0).output();
    }
}

/// A Unix user without a home, removed on drop.
struct User(String);

impl User {
    /// With its own primary group (`useradd -U`) or `primary`, and `supplementary` groups.
    fn create(primary: Option<&Group>, supplementary: &[&Group]) -> User {
        let name = unique("ptu");
        let mut args = vec!["-M", "-s", "/usr/sbin/nologin"];
        match primary {
            Some(g) => args.extend(["-g", g.0.as_str()]),
            None => args.push("-U"),
        }
        args.push(&name);
        run("useradd", &args);
        let user = User(name);
        for g in supplementary {
            run("usermod", &["-a", "-G", &g.0, &user.0]);
        }
        user
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.0).output();
        // `-U` made a group of the same name; userdel removes it unless it is shared.
        let _ = Command::new("groupdel").arg(&self.0).output();
    }
}

fn available() -> bool {
    skip::require_root() && pam::available()
}

/// `[email]` to a port where nothing listens (nothing is sent in these tests) and an address
/// for each user in `[users]`, so the menu would offer email.
fn with_addresses(users: &[&User]) -> String {
    let mut toml = otp_e2e::smtp::email_section(otp_e2e::inbox::dead_port(), "none", "");
    for u in users {
        toml.push_str(&format!(
            "[users.{}]\nemail = \"{}@example.com\"\n",
            u.0, u.0
        ));
    }
    toml
}

#[test]
fn a_totp_only_rule_for_a_group_offers_contractors_no_email_and_others_the_menu() {
    if !available() {
        return;
    }
    let contractors = Group::create();
    let by_supplementary = User::create(None, &[&contractors]);
    let by_primary = User::create(Some(&contractors), &[]);
    let employee = User::create(None, &[]);
    let rule = format!(
        "[[policy.rule]]\ngroups = [\"{}\"]\nmethods = [\"totp\"]\n",
        contractors.0
    );
    let users = [&by_supplementary, &by_primary, &employee];
    let otpd = Daemon::start(&format!("{}\n{rule}", with_addresses(&users)));
    let service = PamService::otp(&otpd, "");
    for contractor in [&by_supplementary, &by_primary] {
        let secret = otpd.enroll_totp(&contractor.0);
        let run = service.login(&contractor.0, &[&code(&secret, now())]);
        assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
        assert_eq!(run.prompts().len(), 1, "no menu, only the app: {run:?}");
        assert!(run.prompts()[0].contains("Verification code"), "{run:?}");
        assert!(!run.lines.iter().any(|l| l.contains("email")), "{run:?}");
    }
    otpd.enroll_totp(&employee.0);
    let run = service.login(&employee.0, &[""]);
    assert!(
        run.prompts()[0].contains("Choose a second factor") && run.prompts()[0].contains("email"),
        "outside the group the menu offers email too: {run:?}"
    );
}

#[test]
fn otpctl_enroll_refuses_a_method_the_rule_does_not_count_and_policy_says_why() {
    if !available() {
        return;
    }
    let contractors = Group::create();
    let contractor = User::create(None, &[&contractors]);
    let rule = format!(
        "[[policy.rule]]\nusers = [\"nobody-else\"]\nrequire = \"never\"\n\
         [[policy.rule]]\ngroups = [\"{}\"]\nmethods = [\"totp\"]\nunenrolled = \"enroll\"\n",
        contractors.0
    );
    let otpd = Daemon::start(&format!("{}\n{rule}", with_addresses(&[])));
    let email = format!("{}@example.com", contractor.0);
    let out = otpd.otpctl(&[
        "--user",
        &contractor.0,
        "enroll",
        "email",
        "--email",
        &email,
    ]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("not allowed") && said.contains("rule 2"),
        "{said}"
    );
    // TOTP is allowed.
    otpd.enroll_totp(&contractor.0);
    let out = otpd.otpctl(&["--user", &contractor.0, "policy", "--service", "sshd"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("policy rule 2 applies"), "{text}");
    assert!(
        text.contains(&format!("is in group {}", contractors.0)),
        "{text}"
    );
    assert!(text.contains("rule 1 does not match"), "{text}");
    assert!(text.contains("Methods that count: totp."), "{text}");
    let json = otpd.otpctl_json(&["--user", &contractor.0, "policy"]);
    assert_eq!(json["rule"], 2, "{json}");
    assert_eq!(json["methods"], serde_json::json!(["totp"]), "{json}");
}

#[test]
fn an_exempt_rule_lets_a_service_account_in_through_cron_only() {
    if !available() {
        return;
    }
    let svc = User::create(None, &[]);
    let rule = format!(
        "[[policy.rule]]\nusers = [\"{}\"]\nservices = [\"cron\"]\nrequire = \"never\"\n",
        svc.0
    );
    let otpd = Daemon::start(&rule);
    let mut cron = PamService::otp(&otpd, "");
    std::fs::write(
        cron.dir().join("cron"),
        PamService::otp_line(&otpd, "") + "\n",
    )
    .expect("cron service file");
    cron.name = "cron".into();
    let run = cron.login(&svc.0, &[]);
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    assert!(run.prompts().is_empty(), "no code asked: {run:?}");
    otpd.assert_logged(&format!(
        "cron: user={} rhost=- tty=- uid=0: allowed: exempt by policy rule 1",
        svc.0
    ));
    // The same account through another service has no exemption, and nothing enrolled.
    let sshd = PamService::otp(&otpd, "");
    let run = sshd.login(&svc.0, &[]);
    assert_ne!(run.code, PAM_SUCCESS, "{run:?}");
    otpd.assert_logged(&format!("otp-test: user={} ", svc.0));
}

#[test]
fn a_rule_sends_its_users_sms_codes_through_a_named_provider() {
    if !pam::available() {
        return;
    }
    use otp_e2e::sms::{code_in, twilio_section, SmsProvider, PHONE};
    let secrets = tempfile::tempdir().expect("tempdir");
    let token = secrets.path().join("twilio");
    std::fs::write(&token, "twilio-token\n").expect("token");
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&token, private).expect("chmod");
    let default = SmsProvider::start(&["--provider", "twilio"], None);
    let eu = SmsProvider::start(&["--provider", "twilio"], None);
    let me = otp_e2e::me();
    let otpd = Daemon::start(&format!(
        "[sms]\nprovider = \"twilio\"\n{}\n[sms.providers.eu]\nprovider = \"twilio\"\n{}\n\
         [users.\"{me}\"]\nphone = \"{PHONE}\"\n\
         [[policy.rule]]\nusers = [\"{me}\"]\nsms_provider = \"eu\"\n",
        twilio_section(&default.url(), &token),
        twilio_section(&eu.url(), &token).replace("[sms.twilio]", "[sms.providers.eu.twilio]"),
    ));
    let service = PamService::otp(&otpd, "");
    let mut login = service.start(&me);
    let prompt = login.next_prompt().expect("a prompt");
    assert!(prompt.contains("A code was sent"), "{prompt}");
    let (to, body) = eu.next_message();
    assert_eq!(to, PHONE);
    login.send(&code_in(&body));
    let run = login.finish();
    assert_eq!(run.code, PAM_SUCCESS, "{run:?}\n{}", otpd.log());
    assert!(!default.has_event(), "the default provider was not used");
    let out = otpd.otpctl(&["policy"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SMS codes go through provider eu"), "{text}");
}

#[test]
fn a_rule_naming_an_unknown_provider_is_refused_by_check_config() {
    let otpd = Daemon::start("");
    let base = std::fs::read_to_string(&otpd.config).expect("config");
    std::fs::write(
        &otpd.config,
        format!("{base}\n[[policy.rule]]\nsms_provider = \"nowhere\"\n"),
    )
    .expect("config");
    let out = Command::new(otp_e2e::artifacts::otpd())
        .arg("--config")
        .arg(&otpd.config)
        .arg("check-config")
        .output()
        .expect("check-config");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("sms_provider \"nowhere\" is not an [sms.providers.nowhere]"),
        "{said}"
    );
}
