//! The table "Which module may import which" at the end of docs/design.md, checked against the
//! code: every `crate::` path in otpd/src (the otpd library; the binaries are crates of their
//! own) must be one its module's row allows. A failure names file, line and the import.
//!
//! A row's module is `otpd::NAME` (otpd/src/NAME.rs or otpd/src/NAME/**); its cell lists
//! modules in backticks (`a` allows `crate::a` and everything under it, `a::b` only that part),
//! or says "nothing of ours", or "everything above" (every module in the rows above it). A
//! module without a row fails too, so a new module gets its place in the table. `proto` and
//! `pam_otp` are other crates: Cargo keeps them from reaching otpd at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SECTION: &str = "## Which module may import which";

/// What one module may import: path prefixes below `crate::`.
#[derive(Debug, Clone)]
struct Allowed(Vec<String>);

impl Allowed {
    fn permits(&self, path: &str) -> bool {
        self.0
            .iter()
            .any(|a| path == a || path.starts_with(&format!("{a}::")))
    }
}

/// The otpd rows of the table, in order.
fn table(design: &str) -> Vec<(String, Allowed)> {
    let section = design
        .split_once(SECTION)
        .unwrap_or_else(|| panic!("docs/design.md has no section {SECTION:?}"))
        .1;
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut rows: Vec<(String, Allowed)> = Vec::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [modules, may] = cells[..] else {
            panic!("a row of two cells: {line:?}");
        };
        let names = ticked(modules);
        if names.is_empty() {
            continue; // the header and its rule
        }
        let allowed = if may.contains("everything above") {
            rows.iter().map(|(m, _)| m.clone()).collect()
        } else if may.contains("nothing of ours") {
            Vec::new()
        } else {
            let listed = ticked(may);
            assert!(
                !listed.is_empty(),
                "a row that allows nothing legible: {line:?}"
            );
            listed
        };
        for name in names {
            if let Some(module) = name.strip_prefix("otpd::") {
                rows.push((module.to_owned(), Allowed(allowed.clone())));
            }
        }
    }
    assert!(!rows.is_empty(), "no otpd rows read from the table");
    rows
}

/// The names in backticks in a table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// One `crate::` path in the code.
#[derive(Debug, PartialEq)]
struct Import {
    line: usize,
    /// Below `crate::`: `policy::recovery::RecoveryHash`.
    path: String,
}

/// Every `crate::` path in `source`, a `use crate::{a, b::{c, d}}` group counted per leaf.
/// Comments are blanked first, so doc links and prose do not count.
fn imports(source: &str) -> Vec<Import> {
    let text = without_comments(source);
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find("crate::") {
        let start = at + i;
        at = start + "crate::".len();
        let before = start.checked_sub(1).map(|j| bytes[j]);
        if before.is_some_and(|b| b == b'$' || b == b'_' || b.is_ascii_alphanumeric()) {
            continue; // `$crate::` in a macro, or a longer name
        }
        let mut pos = at;
        paths(bytes, &mut pos, String::new(), &mut found);
    }
    found
}

/// Read a path (or a `{…}` group of them) at `pos`, pushing each complete one after `prefix`.
fn paths(bytes: &[u8], pos: &mut usize, prefix: String, found: &mut Vec<Import>) {
    skip_space(bytes, pos);
    if bytes.get(*pos) == Some(&b'{') {
        *pos += 1;
        loop {
            skip_space(bytes, pos);
            match bytes.get(*pos) {
                None => return,
                Some(b'}') => {
                    *pos += 1;
                    return;
                }
                Some(b',') => *pos += 1,
                Some(_) => {
                    let before = *pos;
                    paths(bytes, pos, prefix.clone(), found);
                    if *pos == before {
                        *pos += 1; // not a path: step over it rather than loop
                    }
                }
            }
        }
    }
    let start = *pos;
    let line = line_of(bytes, start);
    let mut path = prefix;
    loop {
        let seg_start = *pos;
        while bytes
            .get(*pos)
            .is_some_and(|b| *b == b'_' || b.is_ascii_alphanumeric())
        {
            *pos += 1;
        }
        if *pos == seg_start {
            break;
        }
        if !path.is_empty() {
            path.push_str("::");
        }
        path.push_str(&String::from_utf8_lossy(&bytes[seg_start..*pos]));
        if bytes[*pos..].starts_with(b"::") {
            *pos += 2;
            if bytes.get(*pos) == Some(&b'{') {
                paths(bytes, pos, path, found);
                return;
            }
        } else {
            break;
        }
    }
    // `use crate::a::B as C`: the rename is not a path.
    let mut after = *pos;
    skip_space(bytes, &mut after);
    if bytes[after..].starts_with(b"as")
        && bytes.get(after + 2).is_some_and(u8::is_ascii_whitespace)
    {
        *pos = after + 2;
        skip_space(bytes, pos);
        while bytes
            .get(*pos)
            .is_some_and(|b| *b == b'_' || b.is_ascii_alphanumeric())
        {
            *pos += 1;
        }
    }
    if !path.is_empty() && path != "self" {
        found.push(Import { line, path });
    }
}

fn skip_space(bytes: &[u8], pos: &mut usize) {
    while bytes.get(*pos).is_some_and(u8::is_ascii_whitespace) {
        *pos += 1;
    }
}

fn line_of(bytes: &[u8], pos: usize) -> usize {
    1 + bytes[..pos].iter().filter(|b| **b == b'\n').count()
}

/// `source` with comments and the insides of string literals turned to spaces (newlines kept,
/// so lines still count): doc links, prose and log text are not imports.
fn without_comments(source: &str) -> String {
    let c: Vec<char> = source.chars().collect();
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        let ident_before = i > 0 && (c[i - 1] == '_' || c[i - 1].is_alphanumeric());
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let end = (i + 2..c.len().saturating_sub(1))
                .find(|&j| c[j] == '*' && c[j + 1] == '/')
                .map_or(c.len(), |j| j + 2);
            out.extend(c[i..end].iter().copied().map(blank));
            i = end;
        } else if c[i] == 'r' && !ident_before && matches!(next, Some('"' | '#')) {
            // A raw string: r"…" or r#"…"#, ended only by the same number of hashes.
            let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
            if c.get(i + 1 + hashes) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let body = i + 2 + hashes;
            let end = (body..c.len())
                .find(|&j| {
                    c[j] == '"'
                        && c[j + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|&&h| h == '#')
                            .count()
                            == hashes
                })
                .map_or(c.len(), |j| j + 1 + hashes);
            out.push_str("r\"\"");
            out.extend(c[body..end].iter().copied().map(blank));
            i = end;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(c.len());
            out.push_str("\"\"");
            out.extend(c[(i + 1).min(end)..end].iter().copied().map(blank));
            i = end;
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('"', '\'' …), so its quote does not open a string; a lifetime
            // ('a) falls through.
            let end = (i + 2..c.len())
                .find(|&j| c[j] == '\'' && (j > i + 2 || next != Some('\\')))
                .map_or(c.len(), |j| j + 1);
            out.extend(c[i..end].iter().copied().map(blank));
            i = end;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Every .rs file of the otpd library below `src`, with its top module.
fn library_files(src: &Path) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read otpd/src") {
            let path = entry.expect("a directory entry").path();
            let rel = path.strip_prefix(src).expect("below src").to_path_buf();
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default()
                .trim_end_matches(".rs")
                .to_owned();
            // The crate roots, and the otpctl binary (a crate of its own, whose `crate::` is
            // itself).
            if top == "bin" || top == "lib" || top == "main" {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push((top, path));
            }
        }
    }
    files.sort();
    files
}

/// Every import that breaks `rows`, worded for the failure message.
fn violations(root: &Path, rows: &[(String, Allowed)]) -> Vec<String> {
    let rows: BTreeMap<&str, &Allowed> = rows.iter().map(|(m, a)| (m.as_str(), a)).collect();
    let src = root.join("otpd/src");
    let mut broken = Vec::new();
    for (module, file) in library_files(&src) {
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let Some(allowed) = rows.get(module.as_str()) else {
            broken.push(format!(
                "{shown}: module `{module}` has no row in docs/design.md's table"
            ));
            continue;
        };
        let source = std::fs::read_to_string(&file).expect("read a source file");
        for import in imports(&source) {
            let own = import.path == module || import.path.starts_with(&format!("{module}::"));
            if !own && !allowed.permits(&import.path) {
                broken.push(format!(
                    "{shown}:{}: `{module}` may not import `crate::{}` (the table allows: {})",
                    import.line,
                    import.path,
                    allowed.0.join(", ")
                ));
            }
        }
    }
    broken
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

#[test]
fn every_crate_import_in_otpd_follows_the_design_table() {
    let root = repo();
    let design = std::fs::read_to_string(root.join("docs/design.md")).expect("docs/design.md");
    let broken = violations(&root, &table(&design));
    assert!(
        broken.is_empty(),
        "imports that break docs/design.md's \"Which module may import which\":\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_reads_use_groups_paths_in_code_and_skips_comments() {
    let source = "use crate::store::{Record, files::{open, Sealed as S}};\n\
                  // use crate::server::run;\n\
                  /* crate::session */ fn f() { crate::policy::lockout::check(); }\n\
                  use crate::{\n    config::Config,\n    logging,\n};\n\
                  let s = \"crate::notify in a string // not a comment\"; macro_rules! m { () => { $crate::x } }\n\
                  let q = '\"'; let r = r#\"crate::qr \" \"#; fn g<'a>(x: &'a str) { crate::names::Names::new(); }\n";
    let found: Vec<(usize, String)> = imports(source)
        .into_iter()
        .map(|i| (i.line, i.path))
        .collect();
    let expected = [
        (1, "store::Record"),
        (1, "store::files::open"),
        (1, "store::files::Sealed"),
        (3, "policy::lockout::check"),
        (5, "config::Config"),
        (6, "logging"),
        (9, "names::Names::new"),
    ];
    assert_eq!(
        found,
        expected.map(|(l, p)| (l, p.to_owned())).to_vec(),
        "a string, a char literal, a raw string and `$crate` are not imports"
    );
}

#[test]
fn the_checker_flags_an_upward_import_with_file_and_line() {
    let root = tempfile::tempdir().expect("tempdir");
    let src = root.path().join("otpd/src");
    std::fs::create_dir_all(src.join("store")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "pub mod store;\npub mod policy;\n").expect("write");
    std::fs::write(
        src.join("store/mod.rs"),
        "//! Records.\nuse crate::config::Config;\nuse crate::policy::recovery::RecoveryHash;\n",
    )
    .expect("write");
    std::fs::write(src.join("policy.rs"), "use crate::store::Record;\n").expect("write");
    let design = format!(
        "# Design\n\n{SECTION}\n\n| module | may import |\n|---|---|\n\
         | `otpd::config` | nothing of ours |\n| `otpd::store` | `proto`, `config` |\n\
         | `otpd::policy` | everything above |\n\n## After\n| `otpd::store` | `policy` |\n"
    );
    let broken = violations(root.path(), &table(&design));
    assert_eq!(
        broken,
        vec![
            "otpd/src/store/mod.rs:3: `store` may not import `crate::policy::recovery::RecoveryHash` \
             (the table allows: proto, config)"
                .to_owned()
        ]
    );
    std::fs::write(src.join("qr.rs"), "").expect("write");
    let broken = violations(root.path(), &table(&design));
    assert!(
        broken.iter().any(|b| b.contains("module `qr` has no row")),
        "{broken:?}"
    );
}
