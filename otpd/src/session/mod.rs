//! What happens on one connection after its first request: a login conversation (`login`) or
//! one management command (`command`).

pub mod command;
pub mod dialog;
mod duo;
pub mod login;
pub mod send;
#[cfg(test)]
pub mod testing;
