//! `otpctl config`: the configuration in force as `key = value` lines, each with where its
//! value came from (`FILE:LINE`, or `default`), every secret `<redacted>`.
//!
//! The values are read from the configuration's `Debug` form, which every section has (so a
//! section added later is shown without a line here), and their origins from the file's TOML
//! document. Redaction is by key name and fails closed: anything named like a credential,
//! a URL, a header, a template, an address or a number is hidden; paths to secret files are
//! shown (they hold no secret themselves).

use crate::state::State;
use otp_proto::ConfigEntry;

pub const REDACTED: &str = "<redacted>";

/// Key names (the last part) whose values may hold a secret or a person's address.
const SECRET_WORDS: &[&str] = &[
    "password", "secret", "token", "key", "sid", "header", "template", "url", "username", "body",
    "email", "phone", "from",
];

pub fn entries(state: &State) -> Vec<ConfigEntry> {
    let mut leaves = Vec::new();
    let text = format!("{:#?}", state.cfg);
    let mut parser = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    parser.value(String::new(), &mut leaves);
    let document = state.source.as_ref().and_then(|s| {
        toml::de::DeTable::parse(&s.1)
            .ok()
            .map(|d| (s.0.clone(), s.1.clone(), d))
    });
    leaves
        .into_iter()
        .map(|(key, value)| {
            let origin = match &document {
                Some((name, text, doc)) => match origin(doc.get_ref(), &key) {
                    Some(offset) => format!("{name}:{}", line_of(text, offset)),
                    None => "default".to_owned(),
                },
                None => "default".to_owned(),
            };
            let value = if secret(&key) {
                REDACTED.to_owned()
            } else {
                value
            };
            ConfigEntry { key, value, origin }
        })
        .collect()
}

fn secret(key: &str) -> bool {
    // `users.NAME.email`: the name part is not a key word, the last part is.
    let last = key.rsplit('.').next().unwrap_or(key);
    let last = last.split('[').next().unwrap_or(last);
    if last.ends_with("_file") || last.ends_with("_dir") || last.ends_with("_ttl") {
        return false;
    }
    // Anything under a custom gateway's headers table is a header value.
    key.contains(".headers") || SECRET_WORDS.iter().any(|w| last.contains(w))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Where `key` (`a.b[2].c`) is set in the document, as a byte offset.
fn origin(root: &toml::de::DeTable, key: &str) -> Option<usize> {
    let mut table = root;
    let mut found = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (k, v) = table.iter().find(|(k, _)| k.get_ref() == name)?;
        found = Some(k.span().start);
        let mut value = v.get_ref();
        if let (Some(i), toml::de::DeValue::Array(items)) = (index, value) {
            let item = items.get(i.checked_sub(1)?)?;
            found = Some(item.span().start);
            value = item.get_ref();
        }
        match value {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => return found,
        }
    }
    found
}

/// A reader of Rust's pretty `Debug` text: structs, `Some(..)`, enums with data, lists, maps
/// and scalars, flattened to (dotted key, value) leaves.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// An identifier, a number or a bare word (`300s`, `SHA1`, `-1.5`).
    fn word(&mut self) -> String {
        self.skip_space();
        let start = self.i;
        while self.i < self.s.len() && !b"{}()[],: \n".contains(&self.s[self.i]) {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// A quoted string, kept quoted as Debug wrote it.
    fn string(&mut self) -> String {
        let start = self.i;
        self.i += 1;
        while self.i < self.s.len() && self.s[self.i] != b'"' {
            if self.s[self.i] == b'\\' {
                self.i += 1;
            }
            self.i += 1;
        }
        self.i = (self.i + 1).min(self.s.len());
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn join(path: &str, part: &str) -> String {
        if path.is_empty() {
            part.to_owned()
        } else {
            format!("{path}.{part}")
        }
    }

    /// One value at `path`; leaves go to `out`. Returns its text when it is a scalar (so a
    /// list of scalars can be shown on one line).
    fn value(&mut self, path: String, out: &mut Vec<(String, String)>) -> Option<String> {
        match self.peek()? {
            b'"' => return Some(self.string()),
            b'[' => {
                self.i += 1;
                let mut scalars = Vec::new();
                let mut n = 0;
                while !self.eat(b']') {
                    self.peek()?;
                    n += 1;
                    if let Some(s) = self.value(format!("{path}[{n}]"), out) {
                        scalars.push(s);
                    }
                    self.eat(b',');
                }
                if n == scalars.len() {
                    out.push((path, format!("[{}]", scalars.join(", "))));
                }
                return None;
            }
            b'{' => {
                // A map: `"key": value`.
                self.i += 1;
                while !self.eat(b'}') {
                    self.peek()?;
                    let key = match self.peek() {
                        Some(b'"') => self.string().trim_matches('"').to_owned(),
                        _ => self.word(),
                    };
                    self.eat(b':');
                    let at = Self::join(&path, &key);
                    if let Some(s) = self.value(at.clone(), out) {
                        out.push((at, s));
                    }
                    self.eat(b',');
                }
                return None;
            }
            _ => {}
        }
        let word = self.word();
        match self.peek() {
            Some(b'{') => {
                // A struct: `Name { field: value, ... }`.
                self.i += 1;
                while !self.eat(b'}') {
                    self.peek()?;
                    let field = self.word();
                    self.eat(b':');
                    let at = Self::join(&path, &field);
                    if let Some(s) = self.value(at.clone(), out) {
                        if s != "None" {
                            out.push((at, s));
                        }
                    }
                    self.eat(b',');
                }
                None
            }
            Some(b'(') => {
                // `Some(x)` is x; another variant with data shows as `Variant(x)`.
                self.i += 1;
                let inner = self.value(path, out);
                self.eat(b',');
                self.eat(b')');
                match (word.as_str(), inner) {
                    ("Some", inner) => inner,
                    (_, Some(s)) => Some(format!("{word}({s})")),
                    (_, None) => None,
                }
            }
            _ => Some(word),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::world;
    use super::*;

    #[test]
    fn every_value_is_listed_with_its_origin_and_secrets_are_redacted() {
        let text = "[policy]\nunenrolled = \"enroll\"\n\n[[policy.rule]]\ngroups = [\"ops\"]\n\
                    [sms]\nprovider = \"custom\"\n[sms.custom]\nurl = \"https://gw.example/?key=TOPSECRET\"\n\
                    template = \"to={{mobile}}&text={{body}}&k=TOPSECRET2\"\n\
                    headers = { Authorization = \"Bearer TOPSECRET3\" }\n";
        let cfg = crate::config::Config::parse(std::path::Path::new("/etc/o.toml"), text).unwrap();
        let mut w = world(|c| *c = cfg);
        w.state.source = Some(std::sync::Arc::new(("/etc/o.toml".into(), text.into())));
        let all = entries(&w.state);
        let get = |k: &str| {
            all.iter()
                .find(|e| e.key == k)
                .unwrap_or_else(|| panic!("{k}: {all:#?}"))
        };
        assert_eq!(get("policy.unenrolled").value, "Enroll");
        assert_eq!(get("policy.unenrolled").origin, "/etc/o.toml:2");
        assert_eq!(get("policy.rule[1].groups").value, "[\"ops\"]");
        assert_eq!(get("policy.rule[1].groups").origin, "/etc/o.toml:5");
        assert_eq!(get("lockout.max_failures").value, "5");
        assert_eq!(get("lockout.max_failures").origin, "default");
        assert_eq!(get("sms.custom.url").value, REDACTED);
        assert_eq!(get("key_file").value, "\"/etc/otpd/key\"");
        let printed = format!("{all:?}");
        assert!(!printed.contains("TOPSECRET"), "{printed}");
    }
}
