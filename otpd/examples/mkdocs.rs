//! Writes the man pages of otpd(8) and otpctl(1) and their bash and zsh completions into a
//! directory, from the same clap definitions the binaries parse with. Used by packaging.
//!
//!     cargo run -p otpd --example mkdocs -- target/assets

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/assets".into()),
    );
    std::fs::create_dir_all(out.join("completions"))?;
    for (mut cmd, section) in [
        (otpd::cli::otpd::Cli::command(), "8"),
        (otpd::cli::otpctl::Cli::command(), "1"),
    ] {
        let name = cmd.get_name().to_owned();
        let page = clap_mangen::Man::new(cmd.clone()).section(section);
        let mut roff = Vec::new();
        page.render(&mut roff)?;
        std::fs::write(out.join(format!("{name}.{section}")), roff)?;
        for shell in [Shell::Bash, Shell::Zsh] {
            let dir = out.join("completions");
            clap_complete::generate_to(shell, &mut cmd, &name, &dir)?;
        }
    }
    Ok(())
}
