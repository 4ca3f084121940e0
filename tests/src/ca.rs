//! A throwaway CA and a server certificate for 127.0.0.1 (openssl), for the TLS tests of the
//! SMTP and SMS channels.

use std::path::PathBuf;
use std::process::Command;

/// A CA and a server certificate for 127.0.0.1 signed by it (openssl).
pub struct TestCa {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// For IP 127.0.0.1 and the name localhost.
    pub fn new() -> TestCa {
        TestCa::for_names("IP:127.0.0.1,DNS:localhost")
    }

    /// The server certificate for `alt_names` (an openssl subjectAltName list).
    pub fn for_names(alt_names: &str) -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("test-ca")
            .tempdir()
            .expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=otp test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(p("ext"), format!("subjectAltName={alt_names}\n")).expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        TestCa {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
            _dir: dir,
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
