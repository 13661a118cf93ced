//! The command line: `wasm-exec-api` alone (or `serve`) runs the server; the
//! other subcommands are a client of a running server, speaking the same
//! JSON API as any other client.
//!
//! Exit codes, for scripts: `0` success; `1` the server answered with an
//! error (trap, limit, invalid module, ...); `2` a usage error or a file
//! that cannot be read; `3` the server could not be reached or sent
//! something that is not our API. `run` exits with the WASI program's own
//! exit code when it ran to completion, and with `125` when the server
//! refused the program or it trapped (as `docker run` does).

//!
//! - [`args`] — the command line as clap parses it.
//! - [`client`] — a small blocking HTTP client of the server's JSON API.
//! - [`commands`] — each client subcommand: build a request, print the answer.

pub mod args;
pub mod client;
pub mod commands;

pub use args::{CallArgs, Cli, Command, ModulesArgs, RegisterArgs, RunArgs, ServerArgs};
pub use commands::run_client;
