//! `otpctl`: enroll, verify and manage second factors through `otpd`.
//!
//! Exit codes: 0 ok, 1 refused or wrong code, 2 usage or configuration error, 3 daemon
//! unreachable. `--json` prints one JSON object per command for scripts.

mod output;
mod views;

use clap::Parser;
use otp_proto::client::Connection;
use otp_proto::{
    Command, CommandReply, DisableProof, MethodKind, Refusal, Reply, Request, Secret, Via,
};
use otpd::cli::otpctl::{AttemptsCmd, Cli, Cmd, DefaultArg, EnrollArg, ImportFormat, ViaArg};
use output::Output;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output { json: cli.json };
    let socket = match socket_path(&cli) {
        Ok(s) => s,
        Err(e) => return out.fail(2, &e),
    };
    if let Cmd::Import { format, file, code } = &cli.command {
        let proof = code.clone().map(Secret::new);
        return import(&socket, &out, cli.user.clone(), *format, file, proof);
    }
    let request = match build(&cli) {
        Ok(r) => r,
        Err(e) => return out.fail(2, &e),
    };
    // Created before otpd is asked for codes, so a path that cannot be used costs nothing.
    let codes_file = match &cli.command {
        Cmd::Enroll {
            codes_file: Some(p),
            ..
        }
        | Cmd::RecoveryCodes {
            codes_file: Some(p),
            ..
        } => match CodesFile::create(p) {
            Ok(f) => Some(f),
            Err(e) => return out.fail(2, &e),
        },
        _ => None,
    };
    let reply = match call_with_proof(&socket, request) {
        Ok(r) => r,
        Err(e) => return out.fail(3, &e),
    };
    match (cli.command, reply) {
        (Cmd::Enroll { secret, .. }, Reply::Done(CommandReply::TotpEnrollment(e))) => {
            // A hardware token's secret came from its vendor: nothing to scan or type.
            let token = secret.is_some();
            if token {
                out.token(&e);
            } else {
                out.enrollment(&e);
            }
            // Shown unless declined: typing the key is the fallback when a camera cannot scan.
            if !cli.json && !token && !ask_no("Can't scan it? Show the key instead? [Y/n] ") {
                out.key(&e);
            }
            out.recovery_codes(&e.recovery_codes);
            if let Err(code) = save_codes(&out, codes_file, &e.recovery_codes, cli.json) {
                return code;
            }
            if cli.json {
                return ExitCode::SUCCESS;
            }
            let from = if token { "token" } else { "app" };
            let prompt = format!(
                "Enter the {}-digit code from your {from} to confirm (empty to stop): ",
                e.digits
            );
            confirm(&socket, &out, Some(e.user), &prompt)
        }
        (Cmd::Enroll { .. }, Reply::Done(sent @ CommandReply::CodeSent { .. })) => {
            out.done(&sent);
            if cli.json {
                return ExitCode::SUCCESS;
            }
            let prompt = "Enter the code you received to confirm (empty to stop): ";
            confirm(&socket, &out, cli.user.clone(), prompt)
        }
        (Cmd::RecoveryCodes { .. }, Reply::Done(CommandReply::RecoveryCodes(codes))) => {
            out.done(&CommandReply::RecoveryCodes(codes.clone()));
            match save_codes(&out, codes_file, &codes, cli.json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => code,
            }
        }
        (_, Reply::Done(done)) => {
            out.done(&done);
            ExitCode::SUCCESS
        }
        (_, Reply::Refused(refusal)) => out.refused(&refusal),
        (_, other) => out.fail(3, &format!("unexpected reply from otpd: {other:?}")),
    }
}

fn build(cli: &Cli) -> Result<Request, String> {
    let user = cli.user.clone();
    let admin_target = || {
        user.clone()
            .ok_or_else(|| "this command needs --user NAME".to_owned())
    };
    let given = |code: &Option<String>| code.clone().map(Secret::new);
    Ok(Request::Command(match &cli.command {
        Cmd::Enroll {
            method: EnrollArg::Totp,
            code,
            ..
        } => Command::EnrollTotp {
            user,
            proof: given(code),
        },
        Cmd::Enroll {
            method: EnrollArg::Hotp,
            secret,
            counter,
            digits,
            code,
            ..
        } => Command::EnrollHotp {
            user,
            secret: secret.clone().map(Secret::new),
            counter: *counter,
            digits: *digits,
            proof: given(code),
        },
        Cmd::Enroll {
            method: EnrollArg::Sms,
            phone,
            code,
            ..
        } => Command::EnrollSms {
            user,
            number: phone
                .clone()
                .ok_or_else(|| "enroll sms needs --phone NUMBER".to_owned())?,
            proof: given(code),
        },
        Cmd::Enroll {
            method: EnrollArg::Email,
            email,
            code,
            ..
        } => Command::EnrollEmail {
            user,
            address: email
                .clone()
                .ok_or_else(|| "enroll email needs --email ADDRESS".to_owned())?,
            proof: given(code),
        },
        // otpd decides who must prove a factor; `call_with_proof` asks when it says so.
        Cmd::RecoveryCodes { code, .. } => Command::RecoveryCodes {
            proof: given(code),
            user,
        },
        Cmd::Default { method } => Command::SetDefault {
            user,
            method: method_kind(*method),
        },
        Cmd::Send { via } => Command::Send {
            user,
            via: via.map(|v| match v {
                ViaArg::Email => Via::Email,
                ViaArg::Sms => Via::Sms,
            }),
        },
        Cmd::Verify { code } => Command::Verify {
            user,
            code: match code {
                Some(c) => Secret::new(c.clone()),
                None => ask_hidden("Code: ")?,
            },
        },
        Cmd::Status => Command::Status { user },
        Cmd::Disable {
            method,
            token,
            code,
        } => Command::Disable {
            user,
            method: method.and_then(method_kind),
            proof: match (token, code) {
                (Some(t), _) => Some(DisableProof::Token(Secret::new(t.clone()))),
                (None, Some(c)) => Some(DisableProof::Code(Secret::new(c.clone()))),
                (None, None) => None,
            },
        },
        Cmd::Unlock => Command::Unlock {
            user: admin_target()?,
        },
        Cmd::Reset => Command::Reset {
            user: admin_target()?,
        },
        Cmd::Users => Command::Users,
        Cmd::Policy { service } => Command::Policy {
            user,
            service: service.clone(),
        },
        Cmd::Config => Command::Config,
        Cmd::Attempts {
            show: Some(AttemptsCmd::Show { id }),
            ..
        } => Command::AttemptShow { id: id.clone() },
        Cmd::Attempts {
            show: None,
            since,
            result,
            limit,
        } => Command::Attempts(views::query(user, since.as_deref(), *result, *limit)?),
        Cmd::Stats => Command::Stats,
        Cmd::Import { .. } => return Err("import is not a single request".into()),
    }))
}

/// The end of an interactive enrollment: ask for the first code until one works or the
/// person gives up; a pending enrollment stays pending for `otpctl verify` later.
fn confirm(socket: &std::path::Path, out: &Output, user: Option<String>, prompt: &str) -> ExitCode {
    loop {
        let code = match ask_visible(prompt) {
            Some(c) if !c.trim().is_empty() => c,
            _ => {
                eprintln!(
                    "Not confirmed. The enrollment stays pending until `otpctl verify CODE`."
                );
                return ExitCode::from(1);
            }
        };
        let request = Request::Command(Command::Verify {
            user: user.clone(),
            code: Secret::new(code.trim()),
        });
        match call(socket, &request) {
            Ok(Reply::Done(done)) => {
                out.done(&done);
                return ExitCode::SUCCESS;
            }
            Ok(Reply::Refused(Refusal::WrongCode | Refusal::CodeUsed)) => {
                eprintln!("That code did not match; try again.")
            }
            Ok(Reply::Refused(r)) => return out.refused(&r),
            Ok(other) => return out.fail(3, &format!("unexpected reply from otpd: {other:?}")),
            Err(e) => return out.fail(3, &e),
        }
    }
}

/// Send `request`; when otpd answers that the change needs proof of a factor and none was
/// given, ask for a code (hidden) and send it again with it. otpd alone decides who must prove.
fn call_with_proof(socket: &std::path::Path, mut request: Request) -> Result<Reply, String> {
    let reply = call(socket, &request)?;
    if reply != Reply::Refused(Refusal::ProofRequired) {
        return Ok(reply);
    }
    let Some(slot) = proof_slot(&mut request).filter(|slot| slot.is_none()) else {
        return Ok(reply);
    };
    match ask_hidden("A current code (or a recovery code) proves it is you: ") {
        Ok(code) if !code.expose().trim().is_empty() => {
            *slot = Some(Secret::new(code.expose().trim()))
        }
        _ => return Ok(reply),
    }
    call(socket, &request)
}

/// Where a command carries its proof of a factor, if it has one.
fn proof_slot(request: &mut Request) -> Option<&mut Option<Secret>> {
    match request {
        Request::Command(
            Command::EnrollTotp { proof, .. }
            | Command::EnrollHotp { proof, .. }
            | Command::EnrollEmail { proof, .. }
            | Command::EnrollSms { proof, .. }
            | Command::Import { proof, .. }
            | Command::RecoveryCodes { proof, .. },
        ) => Some(proof),
        _ => None,
    }
}

fn call(socket: &std::path::Path, request: &Request) -> Result<Reply, String> {
    let unreachable =
        |e: &dyn std::fmt::Display| format!("cannot reach otpd at {}: {e}", socket.display());
    let mut conn = Connection::connect(socket, CONNECT_TIMEOUT).map_err(|e| unreachable(&e))?;
    conn.call(request).map_err(|e| unreachable(&e))
}

/// `--socket`, else the socket named in `--config` (which must then be valid), else the one in
/// the default config when it is readable (it is 0640 root), else the built-in default.
fn socket_path(cli: &Cli) -> Result<PathBuf, String> {
    use otpd::config::{Config, DEFAULT_PATH};
    if let Some(s) = &cli.socket {
        return Ok(s.clone());
    }
    if let Some(path) = &cli.config {
        return Config::load(path)
            .map(|c| c.socket)
            .map_err(|e| e.to_string());
    }
    match Config::load(std::path::Path::new(DEFAULT_PATH)) {
        Ok(c) => Ok(c.socket),
        Err(otpd::config::ConfigError::Read { .. }) => Ok(PathBuf::from(otp_proto::DEFAULT_SOCKET)),
        Err(e) => Err(e.to_string()),
    }
}

/// Read another tool's file here (root may read users' files) and hand each key to otpd.
fn import(
    socket: &std::path::Path,
    out: &Output,
    user: Option<String>,
    format: ImportFormat,
    file: &std::path::Path,
    proof: Option<Secret>,
) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => zeroize::Zeroizing::new(t),
        Err(e) => return out.fail(2, &format!("cannot read {}: {e}", file.display())),
    };
    let keys = match format {
        ImportFormat::GoogleAuthenticator => {
            otpd::import::google_authenticator(&text).map(|k| vec![(user.clone(), k)])
        }
        ImportFormat::Oath => otpd::import::oath_usersfile(&text).map(|keys| {
            keys.into_iter()
                .filter(|(u, _)| user.as_ref().is_none_or(|want| want == u))
                .map(|(u, k)| (Some(u), k))
                .collect()
        }),
    };
    let keys = match keys {
        Ok(k) if !k.is_empty() => k,
        Ok(_) => return out.fail(2, "no key for that user in the file"),
        Err(e) => return out.fail(2, &format!("{}: {e}", file.display())),
    };
    // Every key first, so a file with one bad line imports nothing; otpd checks again.
    for (user, key) in &keys {
        if let Err(e) = otpd::import::check_imported(key) {
            let name = user.as_deref().unwrap_or("your key");
            return out.fail(2, &format!("{}: {name}: {e}", file.display()));
        }
    }
    let mut imported = Vec::new();
    for (user, key) in keys {
        let name = user.clone().unwrap_or_else(|| "you".into());
        let request = Request::Command(Command::Import {
            user,
            key,
            proof: proof.clone(),
        });
        match call_with_proof(socket, request) {
            Ok(Reply::Done(_)) => imported.push(name),
            Ok(Reply::Refused(r)) => return out.fail(1, &format!("{name}: {r}")),
            Ok(other) => return out.fail(3, &format!("unexpected reply from otpd: {other:?}")),
            Err(e) => return out.fail(3, &e),
        }
    }
    if out.json {
        println!(
            "{}",
            serde_json::json!({ "ok": true, "imported": imported })
        );
    } else {
        println!(
            "Imported: {}. Existing authenticator apps keep working.",
            imported.join(", ")
        );
    }
    ExitCode::SUCCESS
}

/// Write recovery codes to `file` (created already), or to a path asked for on a terminal.
fn save_codes(
    out: &Output,
    file: Option<CodesFile>,
    codes: &[Secret],
    json: bool,
) -> Result<(), ExitCode> {
    let file = match file {
        Some(f) => f,
        None if json => return Ok(()),
        None => loop {
            match ask_visible("Save them to a file? Enter a path, or leave empty: ") {
                Some(p) if !p.trim().is_empty() => match CodesFile::create(p.trim().as_ref()) {
                    Ok(f) => break f,
                    Err(e) => eprintln!("{e}"),
                },
                _ => return Ok(()),
            }
        },
    };
    let text = zeroize::Zeroizing::new(
        codes
            .iter()
            .map(|c| format!("{}\n", c.expose()))
            .collect::<String>(),
    );
    let path = file.path.clone();
    file.write(text.as_bytes())
        .map_err(|e| out.fail(2, &format!("cannot write {}: {e}", path.display())))?;
    if !json {
        eprintln!("Saved to {} (readable only by you).", path.display());
    }
    Ok(())
}

/// A new file for recovery codes, mode 0600. Never an existing file and never through a
/// symlink at the path (O_CREAT|O_EXCL|O_NOFOLLOW): root running `otpctl --user alice ...
/// --codes-file /home/alice/codes` must not overwrite whatever alice's symlink points at.
/// Removed again when dropped unwritten (otpd refused, or was unreachable).
struct CodesFile {
    path: PathBuf,
    file: std::fs::File,
    written: bool,
}

impl CodesFile {
    fn create(path: &std::path::Path) -> Result<CodesFile, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => format!(
                    "{} already exists (or is a symlink); recovery codes go only to a new file",
                    path.display()
                ),
                _ => format!("cannot create {}: {e}", path.display()),
            })?;
        Ok(CodesFile {
            path: path.to_owned(),
            file,
            written: false,
        })
    }

    fn write(mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.file.write_all(bytes)?;
        self.file.sync_all()?;
        self.written = true;
        Ok(())
    }
}

impl Drop for CodesFile {
    fn drop(&mut self) {
        if !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn method_kind(arg: DefaultArg) -> Option<MethodKind> {
    match arg {
        DefaultArg::Totp => Some(MethodKind::Totp),
        DefaultArg::Email => Some(MethodKind::Email),
        DefaultArg::Sms => Some(MethodKind::Sms),
        DefaultArg::Duo => Some(MethodKind::Duo),
        DefaultArg::None => None,
    }
}

/// True only for an explicit no; an empty answer or no terminal takes the default (yes).
fn ask_no(prompt: &str) -> bool {
    ask_visible(prompt).is_some_and(|a| matches!(a.trim(), "n" | "N" | "no"))
}

fn ask_hidden(prompt: &str) -> Result<Secret, String> {
    rpassword::prompt_password(prompt)
        .map(Secret::from)
        .map_err(|e| format!("cannot read the code: {e}"))
}

fn ask_visible(prompt: &str) -> Option<String> {
    use std::io::Write;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}
