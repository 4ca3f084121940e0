//! `[metrics] textfile`: the audit counts `otpctl stats` prints, as Prometheus text for
//! node_exporter's textfile collector, rewritten every 15 s atomically (temp file, fsync,
//! rename), so the collector never reads half a file.

use crate::audit::Audit;
use otp_proto::{StatCount, StatsReport};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const EVERY: Duration = Duration::from_secs(15);

/// Rewrite `path` every `EVERY` until the task is dropped; a failed write is logged once per
/// run of failures and retried.
pub async fn write_periodically(audit: Arc<Audit>, path: PathBuf) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let text = render(&audit.stats());
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || write_atomically(&target, &text)).await;
        match written {
            Ok(Ok(())) => failing = false,
            Ok(Err(e)) if !failing => {
                failing = true;
                log::error!("metrics file {}: {e}", path.display());
            }
            _ => {}
        }
    }
}

/// The Prometheus text exposition format, one gauge per window.
pub fn render(stats: &StatsReport) -> String {
    let mut out = String::new();
    for (name, window, counts) in [
        ("otpd_audit_events_last_hour", "hour", &stats.last_hour),
        ("otpd_audit_events_last_day", "day", &stats.last_day),
    ] {
        out.push_str(&format!(
            "# HELP {name} Audit events of the last {window} by kind, result and method.\n\
             # TYPE {name} gauge\n"
        ));
        for c in counts {
            out.push_str(&format!("{name}{} {}\n", labels(c), c.count));
        }
    }
    out
}

fn labels(c: &StatCount) -> String {
    // serde's names (kebab-case) are the ones the JSON-lines file and --json use.
    let word = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let method = match c.method {
        Some(m) => word(serde_json::to_value(m)),
        None => "none".to_owned(),
    };
    format!(
        "{{kind=\"{}\",result=\"{}\",method=\"{method}\"}}",
        word(serde_json::to_value(c.kind)),
        word(serde_json::to_value(c.result)),
    )
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{}.tmp", name.unwrap_or_else(|| "metrics".into())));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            // Counts only, no secret: readable by node_exporter.
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use otp_proto::{AuditKind, AuditResult, MethodKind};

    #[test]
    fn counts_render_as_labelled_gauges() {
        let c = StatCount {
            kind: AuditKind::RecoveryCodes,
            result: AuditResult::Denied,
            method: Some(MethodKind::Sms),
            count: 3,
        };
        let text = render(&StatsReport {
            last_hour: vec![c.clone()],
            last_day: vec![c],
        });
        assert!(text.contains(
            "otpd_audit_events_last_hour{kind=\"recovery-codes\",result=\"denied\",method=\"sms\"} 3\n"
        ));
        assert!(text.contains("# TYPE otpd_audit_events_last_day gauge\n"));
    }
}
