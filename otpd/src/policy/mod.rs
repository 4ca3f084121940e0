//! The rules: what makes a code valid (`totp`), which answer proves what (`proof`, the one
//! place every typed answer is judged), when a user is locked out (`lockout`), sent codes
//! (`challenge`), recovery codes (`recovery`), the steps spent at login (`replay`), the codes
//! otpd makes up (`codes`); and over the store: user records under each user's lock
//! (`records`), checks against the app key (`keys`), adding factors (`enrollment`), what a user
//! can log in with (`factors`), all owned together by `accounts`.

pub mod accounts;
pub mod challenge;
pub mod clock;
pub mod codes;
pub mod enrollment;
pub mod factors;
pub mod keys;
pub mod lockout;
pub mod proof;
pub mod records;
pub mod recovery;
pub mod replay;
pub mod totp;

use crate::store::StoreError;

/// Run blocking store I/O on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(StoreError::Stopping))
}

/// docs/design.md's last table ("Which module may import which") checked against the code: a
/// `crate::X` path in a layer's files names a layer the table allows it, so an arrow that
/// points up (the store importing a policy type, policy importing a channel) fails here.
#[cfg(test)]
mod layers {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// The table's rows for otpd's own layers: layer → the layers it may import, or `None` for
    /// "everything above".
    fn table() -> BTreeMap<String, Option<Vec<String>>> {
        let design = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/design.md");
        let text = std::fs::read_to_string(&design).unwrap();
        let section = text
            .split("## Which module may import which")
            .nth(1)
            .unwrap();
        let mut rows = BTreeMap::new();
        for line in section.lines().filter(|l| l.starts_with("| `otpd::")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let layer = cells[1].trim_matches('`').trim_start_matches("otpd::");
            let allowed = (!cells[2].contains("everything")).then(|| {
                (cells[2]
                    .split(',')
                    .map(|c| c.trim().trim_matches('`').to_owned()))
                .collect()
            });
            rows.insert(layer.to_owned(), allowed);
        }
        rows
    }

    fn sources(path: &Path, out: &mut Vec<PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                sources(&entry.unwrap().path(), out);
            }
        } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_owned());
        }
    }

    /// Every layer `source` names with a `crate::` path, outside comments.
    fn imported_layers<'a>(source: &str, layers: &'a [String]) -> Vec<&'a String> {
        let code: Vec<&str> = source
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        let code = code.join("\n");
        let named = |l: &String| {
            code.match_indices(&format!("crate::{l}")).any(|(i, m)| {
                !code[i + m.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            })
        };
        layers.iter().filter(|l| named(l)).collect()
    }

    #[test]
    fn a_violation_is_seen() {
        let layers = vec!["policy".to_owned(), "store".to_owned()];
        let upward = "use crate::policy::recovery::RecoveryHash;\n// crate::store in a comment\n";
        assert_eq!(imported_layers(upward, &layers), vec![&layers[0]]);
        assert!(imported_layers("use crate::policy_x::Y;", &layers).is_empty());
    }

    #[test]
    fn every_layer_imports_only_what_the_design_table_allows() {
        let table = table();
        for layer in ["store", "channel", "policy", "session", "server"] {
            assert!(
                table.contains_key(layer),
                "docs/design.md has no row for {layer}"
            );
        }
        let layers: Vec<String> = table.keys().cloned().collect();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut wrong = Vec::new();
        for (layer, allowed) in &table {
            let Some(allowed) = allowed else { continue };
            let mut files = Vec::new();
            sources(&src.join(layer), &mut files);
            sources(&src.join(format!("{layer}.rs")), &mut files);
            assert!(!files.is_empty(), "no source for the layer {layer}");
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                for used in imported_layers(&text, &layers) {
                    if used != layer && !allowed.contains(used) {
                        wrong.push(format!("{} imports {used}", file.display()));
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "arrows docs/design.md does not allow: {wrong:#?}"
        );
    }
}
