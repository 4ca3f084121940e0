//! How `otpctl` prints what the read-only commands return: the policy rule that applies, the
//! configuration in force, audit events and their counts. JSON is the wire types' own shape.

use otp_proto::{
    AttemptQuery, AuditEvent, AuditResult, CommandReply, ConfigEntry, PolicyReport, StatCount,
};
use otpd::cli::otpctl::ResultArg;

/// `otpctl attempts` flags as a query; `--since` is a duration like "1h".
pub fn query(
    user: Option<String>,
    since: Option<&str>,
    result: Option<ResultArg>,
    limit: Option<u32>,
) -> Result<AttemptQuery, String> {
    let since_secs = match since {
        Some(s) => Some(
            humantime::parse_duration(s)
                .map_err(|e| format!("--since {s:?}: not a duration like \"1h\": {e}"))?
                .as_secs(),
        ),
        None => None,
    };
    Ok(AttemptQuery {
        user,
        since_secs,
        result: result.map(|r| match r {
            ResultArg::Allowed => AuditResult::Allowed,
            ResultArg::Denied => AuditResult::Denied,
            ResultArg::Ignored => AuditResult::Ignored,
            ResultArg::Exempt => AuditResult::Exempt,
        }),
        limit,
    })
}

/// One JSON value for a read-only reply; `None` for the other replies.
pub fn json(done: &CommandReply) -> Option<serde_json::Value> {
    let value = match done {
        CommandReply::Policy(p) => serde_json::to_value(p),
        CommandReply::Config(entries) => serde_json::to_value(entries),
        CommandReply::Attempts(events) => serde_json::to_value(events),
        CommandReply::Attempt(event) => serde_json::to_value(event),
        CommandReply::Stats(stats) => serde_json::to_value(stats),
        _ => return None,
    };
    Some(value.unwrap_or_else(|e| serde_json::json!({ "ok": false, "error": e.to_string() })))
}

/// Print a read-only reply for people; false for the other replies.
pub fn print(done: &CommandReply) -> bool {
    match done {
        CommandReply::Policy(p) => policy(p),
        CommandReply::Config(entries) => config(entries),
        CommandReply::Attempts(events) if events.is_empty() => println!("No matching events."),
        CommandReply::Attempts(events) => events.iter().for_each(|e| println!("{}", line(e))),
        CommandReply::Attempt(event) => full(event),
        CommandReply::Stats(stats) => {
            counts("Last hour", &stats.last_hour);
            counts("Last day", &stats.last_day);
        }
        _ => return false,
    }
    true
}

fn policy(p: &PolicyReport) {
    let through = match &p.service {
        Some(s) => format!(" logging in through {s}"),
        None => " (otpctl commands)".to_owned(),
    };
    let rule = match p.rule {
        Some(n) => format!("policy rule {n}"),
        None => "the global [policy]".to_owned(),
    };
    println!("{}{through}: {rule} applies.", p.user);
    println!("  Why: {}.", p.why);
    let second = match p.require.as_str() {
        "never" => "never asked for (exempt)",
        "enrolled" => "asked for only once one is enrolled",
        _ => "always asked for",
    };
    println!("  A second factor is {second}.");
    match &p.methods {
        Some(m) => {
            let names: Vec<String> = m.iter().map(|k| format!("{k:?}").to_lowercase()).collect();
            println!("  Methods that count: {}.", names.join(", "));
        }
        None => println!("  Methods that count: all."),
    }
    println!("  With nothing enrolled: {}.", p.unenrolled);
    if let Some(name) = &p.sms_provider {
        println!("  SMS codes go through provider {name}.");
    }
    if let Some(name) = &p.email_relay {
        println!("  Email codes go through relay {name}.");
    }
}

fn config(entries: &[ConfigEntry]) {
    let width = entries.iter().map(|e| e.key.len()).max().unwrap_or(0);
    for e in entries {
        println!("{:width$} = {}    # {}", e.key, e.value, e.origin);
    }
}

fn time(unix: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn name<T: std::fmt::Debug>(v: &T) -> String {
    let text = format!("{v:?}");
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// `ID TIME KIND RESULT user=U service=S method=M: reason`.
fn line(e: &AuditEvent) -> String {
    let mut fields = format!("user={}", e.user);
    if let Some(s) = &e.service {
        fields.push_str(&format!(" service={s}"));
    }
    if let Some(m) = &e.method {
        fields.push_str(&format!(" method={}", name(m)));
    }
    format!(
        "{} {} {} {} {fields}: {}",
        e.id,
        time(e.time),
        name(&e.kind),
        name(&e.result),
        e.reason
    )
}

fn full(e: &AuditEvent) {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("id:         {}", e.id);
    println!("time:       {}", time(e.time));
    println!("host:       {}", e.host);
    println!("kind:       {}", name(&e.kind));
    println!("result:     {}", name(&e.result));
    println!("user:       {}", e.user);
    println!("service:    {}", or_dash(&e.service));
    println!("caller uid: {}", e.caller_uid);
    println!("actor:      {}", or_dash(&e.actor));
    println!("rhost:      {}", or_dash(&e.rhost));
    println!("tty:        {}", or_dash(&e.tty));
    println!(
        "method:     {}",
        e.method.map(|m| name(&m)).unwrap_or("-".into())
    );
    println!("challenge:  {}", or_dash(&e.challenge));
    let rule = e.rule.map(|n| format!("policy rule {n}"));
    println!(
        "rule:       {}",
        rule.unwrap_or_else(|| "global policy".into())
    );
    println!("reason:     {}", e.reason);
}

fn counts(title: &str, counts: &[StatCount]) {
    println!("{title}:");
    if counts.is_empty() {
        println!("  no events");
    }
    for c in counts {
        let method = c.method.map(|m| name(&m)).unwrap_or("-".into());
        println!(
            "  {:>7}  {} {} ({method})",
            c.count,
            name(&c.kind),
            name(&c.result)
        );
    }
}
