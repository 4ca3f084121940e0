//! Link the module with `-z nodelete`: once a host process has loaded it, `dlclose` at `pam_end`
//! keeps it mapped, so the host's next PAM transaction does not map, relocate and bind it again
//! (docs/design.md, "Latency: the login's hot path").

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
