//! What happens on one connection after its first request: a login conversation (`login`) or
//! one management command (`command`); the commands that only read policy, configuration and
//! the audit trail are in `inspect`.

pub mod command;
pub mod config_view;
pub mod dialog;
mod duo;
pub mod inspect;
pub mod login;
pub mod send;
#[cfg(test)]
pub mod testing;
pub mod trail;
