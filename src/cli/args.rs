//! The command line: the server's settings, or a client subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;

/// Run WebAssembly over HTTP: the server, and a client for it.
#[derive(Debug, Parser)]
#[command(name = "wasm-exec-api", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand: run the server with these settings.
    #[command(flatten)]
    pub serve: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(Box<Settings>),
    /// Call a function of a module file (.wat or .wasm) on the server.
    Call(CallArgs),
    /// Register a module file under a name.
    Register(RegisterArgs),
    /// List the registered modules.
    Modules(ModulesArgs),
    /// Run a WASI program: arguments after `--`, this process's stdin piped
    /// to it, its stdout and stderr printed, its exit code returned.
    Run(RunArgs),
}

/// Where the server is and how to authenticate.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the server.
    #[arg(long, env = "WASM_EXEC_SERVER", default_value = "http://127.0.0.1:4000")]
    pub server: String,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "WASM_EXEC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON response as it is.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// A .wat (text) or .wasm (binary) file; the kind is read from its bytes.
    pub file: PathBuf,
    /// The exported function to call.
    pub function: String,
    /// Params in order: JSON numbers keep their exact digits (i64 too);
    /// anything that is not JSON (`NaN`, `0x1p-3`) is sent as a string.
    /// Negative numbers work as they are; put `--` before a param such as
    /// `-Infinity` that looks like a flag.
    #[arg(allow_negative_numbers = true)]
    pub params: Vec<String>,
    /// A registered module the file imports from (repeatable).
    #[arg(long = "host-module")]
    pub host_modules: Vec<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The name to register under.
    pub name: String,
    /// A .wat or .wasm file.
    pub file: PathBuf,
    /// A registered module this one imports from (repeatable).
    #[arg(long = "host-module")]
    pub host_modules: Vec<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ModulesArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A WASI command module (.wasm or .wat).
    pub file: PathBuf,
    /// Arguments for the program (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
    /// An environment variable for the program, `KEY=VALUE` (repeatable);
    /// the program sees no other.
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}
