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
    /// Environments: many instances in one store, linked live.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Jobs: calls that run in the background, polled or watched.
    #[command(subcommand)]
    Job(JobCommand),
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a call of a module file as a job and print its id.
    Submit(JobSubmitArgs),
    /// Print a job's status, and its results once it is done.
    Status(JobIdArgs),
    /// Follow a job until it finishes, printing each change, then its
    /// results; the exit code says whether it succeeded.
    Watch(JobIdArgs),
    /// Cancel a job.
    Cancel(JobIdArgs),
}

#[derive(Debug, Args)]
pub struct JobSubmitArgs {
    /// A .wat or .wasm file.
    pub file: PathBuf,
    /// The exported function to call.
    pub function: String,
    /// Params in order, as for `call`.
    #[arg(allow_negative_numbers = true)]
    pub params: Vec<String>,
    /// A registered module the file imports from (repeatable).
    #[arg(long = "host-module")]
    pub host_modules: Vec<String>,
    /// The call's time limit in milliseconds (a job may run longer than a
    /// request: up to the server's --max-job-timeout-ms).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct JobIdArgs {
    /// The job's id.
    pub id: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Create an environment and print its id.
    Create(EnvCreateArgs),
    /// Instantiate a module file (or a registered module) in an environment.
    Add(EnvAddArgs),
    /// Call a function of an instance of an environment.
    Call(EnvCallArgs),
    /// Show an environment's instances and exposed names.
    Show(EnvIdArgs),
    /// Delete an environment.
    Delete(EnvIdArgs),
}

#[derive(Debug, Args)]
pub struct EnvCreateArgs {
    /// Linear memory all its instances may hold together, in bytes (the
    /// server's limit when not given).
    #[arg(long)]
    pub memory_bytes: Option<u64>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct EnvAddArgs {
    /// The environment's id.
    pub env: String,
    /// A .wat or .wasm file (or give --module).
    #[arg(required_unless_present = "module", conflicts_with = "module")]
    pub file: Option<PathBuf>,
    /// A registered module to instantiate instead of a file.
    #[arg(long)]
    pub module: Option<String>,
    /// A name to address the instance by later.
    #[arg(long)]
    pub name: Option<String>,
    /// Expose its exports under this import module name.
    #[arg(long = "as")]
    pub expose_as: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct EnvCallArgs {
    /// The environment's id.
    pub env: String,
    /// The exported function to call.
    pub function: String,
    /// Params in order, as for `call`.
    #[arg(allow_negative_numbers = true)]
    pub params: Vec<String>,
    /// The instance to call, by name (the latest when not given).
    #[arg(long)]
    pub instance: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct EnvIdArgs {
    /// The environment's id.
    pub env: String,
    #[command(flatten)]
    pub server: ServerArgs,
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
    /// For a component: the params are WAVE text (as in
    /// `wasmtime run --invoke`), and results are printed as WAVE.
    #[arg(long)]
    pub wave: bool,
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
