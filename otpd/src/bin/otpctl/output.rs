//! How `otpctl` prints: for people (QR code in the terminal, sentences) or, with `--json`, one
//! JSON object per command.

use otp_proto::{
    AppKind, CommandReply, MethodKind, MethodState, Refusal, Secret, TotpEnrollment, UserStatus,
};
use otpd::qr::{grouped, qr};
use serde_json::json;
use std::process::ExitCode;

pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn enrollment(&self, e: &TotpEnrollment) {
        if self.json {
            let mut object = json!({
                "user": e.user, "secret": e.secret.expose(), "uri": e.uri.expose(),
                "issuer": e.issuer, "account": e.account, "algorithm": e.algorithm,
                "digits": e.digits, "period": e.period, "state": "pending",
                "recovery_codes": e.recovery_codes.iter().map(|c| c.expose()).collect::<Vec<_>>(),
            });
            if let Some(counter) = e.hotp_counter {
                object["type"] = json!("hotp");
                object["counter"] = json!(counter);
                if let Some(map) = object.as_object_mut() {
                    map.remove("period");
                }
            }
            println!("{object}");
            return;
        }
        println!("Scan this QR code with your authenticator app:\n");
        match qr(e.uri.expose()) {
            Some(code) => println!("{code}"),
            None => self.key(e),
        }
    }

    /// The key and its parameters, for typing into an app by hand.
    pub fn key(&self, e: &TotpEnrollment) {
        println!("Type this key into the app: {}", grouped(e.secret.expose()));
        match e.hotp_counter {
            Some(counter) => println!(
                "  account {}, issuer {}, {}, {} digits, counter-based (HOTP), counter {counter}",
                e.account, e.issuer, e.algorithm, e.digits
            ),
            None => println!(
                "  account {}, issuer {}, {}, {} digits, every {} seconds",
                e.account, e.issuer, e.algorithm, e.digits, e.period
            ),
        }
        println!("URI: {}\n", e.uri.expose());
    }

    /// A hardware token enrolled with its vendor's secret: nothing to show but what is next
    /// (in JSON, the same object as an app's enrollment).
    pub fn token(&self, e: &TotpEnrollment) {
        if self.json {
            return self.enrollment(e);
        }
        println!(
            "HOTP token set up for {} ({} digits, next counter {}); it counts at login once \
             one of its codes confirms it.\n",
            e.user,
            e.digits,
            e.hotp_counter.unwrap_or(0)
        );
    }

    /// Shown once, on a terminal; in JSON mode they are part of the command's object.
    pub fn recovery_codes(&self, codes: &[Secret]) {
        if self.json || codes.is_empty() {
            return;
        }
        println!("Recovery codes: each works once, at any code prompt, if you lose your phone.");
        println!("Keep them somewhere safe; they are not shown again.\n");
        for pair in codes.chunks(2) {
            let line: Vec<&str> = pair.iter().map(|c| c.expose()).collect();
            println!("    {}", line.join("    "));
        }
        println!();
    }

    pub fn done(&self, done: &CommandReply) {
        if self.json {
            println!("{}", done_json(done));
            return;
        }
        match done {
            CommandReply::Verified {
                activated: Some(MethodKind::Totp),
            } => println!("Confirmed: the authenticator app is now required at login."),
            CommandReply::Verified {
                activated: Some(MethodKind::Email),
            } => println!("Confirmed: login codes can now be sent to this email address."),
            CommandReply::Verified {
                activated: Some(MethodKind::Sms),
            } => println!("Confirmed: login codes can now be sent to this phone number."),
            CommandReply::Verified {
                activated: None | Some(MethodKind::Duo),
            } => println!("The code is valid."),
            CommandReply::Status(s) => println!("{}", status_line(s)),
            CommandReply::Users(all) if all.is_empty() => println!("No users enrolled."),
            CommandReply::Users(all) => all.iter().for_each(|s| println!("{}", status_line(s))),
            CommandReply::TotpEnrollment(e) => self.enrollment(e),
            CommandReply::CodeSent {
                challenge,
                destination,
            } => println!("A code was sent to {destination} (request {challenge})."),
            CommandReply::RecoveryCodes(codes) => self.recovery_codes(codes),
            CommandReply::TokenSent { destination } => println!(
                "To confirm, run `otpctl disable --token TOKEN` with the token just mailed to \
                 {destination}."
            ),
            CommandReply::Ok => println!("Done."),
            view => {
                super::views::print(view);
            }
        }
    }

    pub fn refused(&self, refusal: &Refusal) -> ExitCode {
        self.fail(1, &refusal.to_string())
    }

    /// Print an error the way the mode asks and return `code`.
    pub fn fail(&self, code: u8, message: &str) -> ExitCode {
        if self.json {
            println!("{}", json!({ "ok": false, "error": message }));
        } else {
            eprintln!("otpctl: {message}");
        }
        ExitCode::from(code)
    }
}

fn done_json(done: &CommandReply) -> serde_json::Value {
    match done {
        CommandReply::Verified { activated } => {
            json!({ "ok": true, "verified": true, "activated": activated.is_some(), "method": activated })
        }
        CommandReply::Status(s) => status_json(s),
        CommandReply::Users(all) => {
            json!({ "users": all.iter().map(status_json).collect::<Vec<_>>() })
        }
        CommandReply::TotpEnrollment(e) => json!({ "user": e.user, "uri": e.uri.expose() }),
        CommandReply::CodeSent {
            challenge,
            destination,
        } => json!({ "ok": true, "challenge": challenge, "destination": destination }),
        CommandReply::TokenSent { destination } => {
            json!({ "ok": true, "token_sent": destination })
        }
        CommandReply::RecoveryCodes(codes) => json!({
            "ok": true,
            "recovery_codes": codes.iter().map(|c| c.expose()).collect::<Vec<_>>(),
        }),
        CommandReply::Ok => json!({ "ok": true }),
        view => super::views::json(view).unwrap_or(json!({ "ok": true })),
    }
}

fn status_json(s: &UserStatus) -> serde_json::Value {
    json!({
        "user": s.user,
        "totp": s.totp.to_string(),
        "app_kind": match s.app_kind {
            AppKind::Totp => "totp",
            AppKind::Hotp => "hotp",
        },
        "email": s.email.to_string(),
        "email_address": s.email_address,
        "sms": s.sms.to_string(),
        "sms_number": s.sms_number,
        "locked_for_secs": s.locked_for_secs,
        "recent_failures": s.recent_failures,
        "recovery_codes_left": s.recovery_codes_left,
    })
}

fn status_line(s: &UserStatus) -> String {
    let totp = match (s.totp, s.app_kind) {
        (MethodState::Active, AppKind::Totp) => "authenticator app active",
        (MethodState::Pending, AppKind::Totp) => "authenticator app pending confirmation",
        (MethodState::Active, AppKind::Hotp) => "HOTP token active",
        (MethodState::Pending, AppKind::Hotp) => "HOTP token pending confirmation",
        (MethodState::None, _) => "nothing enrolled",
    };
    let email = match &s.email_address {
        Some(a) => format!("; email codes to {a}"),
        None => String::new(),
    };
    let sms = match &s.sms_number {
        Some(n) => format!("; SMS codes to {n}"),
        None => String::new(),
    };
    let lock = match s.locked_for_secs {
        Some(secs) => format!("; locked out for {} more minute(s)", secs.div_ceil(60)),
        None if s.recent_failures > 0 => format!("; {} recent failed code(s)", s.recent_failures),
        None => String::new(),
    };
    let recovery = format!("; {} recovery code(s) left", s.recovery_codes_left);
    format!("{}: {totp}{email}{sms}{recovery}{lock}", s.user)
}
