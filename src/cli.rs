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

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use serde_json::value::RawValue;
use serde_json::{Value, json};

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
    Serve(Settings),
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

/// A failed client command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    fn unreachable(message: impl Into<String>) -> Self {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

/// Runs a client subcommand, returning the process exit code.
pub fn run_client(command: Command) -> u8 {
    let result = match command {
        Command::Serve(_) => unreachable!("serve is handled by main"),
        Command::Call(args) => call(args),
        Command::Register(args) => register(args),
        Command::Modules(args) => modules(args),
        Command::Run(args) => run(args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.code
        }
    }
}

/// A module file as the request field that carries it.
fn code_field(path: &Path) -> Result<(&'static str, String), Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    if bytes.starts_with(b"\0asm") {
        return Ok(("wasm_base64", base64::engine::general_purpose::STANDARD.encode(&bytes)));
    }
    String::from_utf8(bytes).map(|text| ("wat", text)).map_err(|_| {
        Failure::usage(format!(
            "{} is neither a WebAssembly binary nor UTF-8 text",
            path.display()
        ))
    })
}

/// A command-line param as a JSON token: JSON as written (so an i64 keeps
/// every digit), anything else as a JSON string.
fn param_token(arg: &str) -> Box<RawValue> {
    match serde_json::from_str::<Box<RawValue>>(arg) {
        Ok(raw) => raw,
        Err(_) => {
            RawValue::from_string(Value::String(arg.to_string()).to_string()).expect("a JSON string is valid JSON")
        }
    }
}

struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

/// What the server answered: status and JSON body.
struct Answer {
    status: u16,
    body: Value,
}

impl Client {
    fn new(args: &ServerArgs) -> Result<Self, Failure> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| Failure::unreachable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            base: args.server.trim_end_matches('/').to_string(),
            token: args.token.clone(),
            http,
        })
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<Answer, Failure> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .map_err(|e| Failure::unreachable(format!("cannot reach {}: {}", self.base, error_chain(&e))))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .map_err(|e| Failure::unreachable(format!("reading the response failed: {e}")))?;
        let body = serde_json::from_str(&text).map_err(|_| {
            Failure::unreachable(format!(
                "{} answered {status} with a body that is not JSON; is it a wasm-exec-api server?",
                self.base
            ))
        })?;
        Ok(Answer { status, body })
    }

    fn post(&self, path: &str, body: String) -> Result<Answer, Failure> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
    }

    fn get(&self, path: &str) -> Result<Answer, Failure> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The server's error as one line: `code: first line of the message`.
fn server_error(answer: &Answer, code: u8) -> Failure {
    let error = &answer.body["error"];
    let kind = error["code"].as_str().unwrap_or("error");
    let message = error["message"].as_str().unwrap_or("(no message)");
    let first = message.lines().next().unwrap_or_default();
    let detail = match (error["trap"].as_str(), error["limit"].as_str()) {
        (Some(trap), _) => format!(" [{trap}]"),
        (_, Some(limit)) => format!(" [{limit}]"),
        _ => String::new(),
    };
    Failure {
        code,
        message: format!("{kind}{detail} ({}): {first}", answer.status),
    }
}

fn print_json(body: &Value) {
    println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
}

/// A JSON value as a script wants it: strings without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_streams(body: &Value) {
    if let Some(out) = body["stdout"].as_str() {
        print!("{out}");
    }
    if let Some(err) = body["stderr"].as_str() {
        eprint!("{err}");
    }
    let _ = std::io::stdout().flush();
}

fn call(args: CallArgs) -> Result<u8, Failure> {
    let (field, code) = code_field(&args.file)?;
    /// `POST /`'s body. Params are raw JSON tokens, so big integers keep
    /// their digits.
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(flatten)]
        code: serde_json::Map<String, Value>,
        function_name: &'a str,
        params: Vec<Box<RawValue>>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        host_modules: &'a [String],
    }
    let body = Body {
        code: serde_json::Map::from_iter([(field.to_string(), Value::String(code))]),
        function_name: &args.function,
        params: args.params.iter().map(|p| param_token(p)).collect(),
        host_modules: &args.host_modules,
    };
    let text = serde_json::to_string(&body).map_err(|e| Failure::usage(format!("cannot encode the request: {e}")))?;
    let client = Client::new(&args.server)?;
    let answer = client.post("/", text)?;
    if args.server.json {
        print_json(&answer.body);
    }
    if answer.status != 200 {
        return Err(server_error(&answer, 1));
    }
    if !args.server.json {
        print_streams(&answer.body);
        for value in answer.body["results"].as_array().into_iter().flatten() {
            println!("{}", plain(value));
        }
    }
    Ok(0)
}

fn register(args: RegisterArgs) -> Result<u8, Failure> {
    let (field, code) = code_field(&args.file)?;
    let body = json!({ "module_name": args.name, field: code, "host_modules": args.host_modules });
    let client = Client::new(&args.server)?;
    let answer = client.post("/register", body.to_string())?;
    if args.server.json {
        print_json(&answer.body);
    }
    if answer.status != 201 {
        return Err(server_error(&answer, 1));
    }
    if !args.server.json {
        let b = &answer.body;
        println!(
            "registered {} ({} bytes, sha256 {})",
            plain(&b["name"]),
            b["size"],
            plain(&b["sha256"])
        );
        for export in b["exports"].as_array().into_iter().flatten() {
            println!(
                "  export {} {} {}",
                plain(&export["kind"]),
                plain(&export["name"]),
                plain(&export["type"])
            );
        }
    }
    Ok(0)
}

fn modules(args: ModulesArgs) -> Result<u8, Failure> {
    let client = Client::new(&args.server)?;
    let answer = client.get("/modules")?;
    if args.server.json {
        print_json(&answer.body);
    }
    if answer.status != 200 {
        return Err(server_error(&answer, 1));
    }
    if args.server.json {
        return Ok(0);
    }
    let rows: Vec<[String; 4]> = answer.body["modules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let hosts: Vec<String> = m["host_modules"].as_array().into_iter().flatten().map(plain).collect();
            [
                plain(&m["name"]),
                m["size"].to_string(),
                if hosts.is_empty() { "-".into() } else { hosts.join(",") },
                plain(&m["created"]),
            ]
        })
        .collect();
    print!("{}", table(["NAME", "SIZE", "HOST MODULES", "CREATED"], &rows));
    Ok(0)
}

/// Left-aligned columns, two spaces apart.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn run(args: RunArgs) -> Result<u8, Failure> {
    let (field, code) = code_field(&args.file)?;
    let mut stdin = Vec::new();
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .read_to_end(&mut stdin)
            .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
    }
    let env: serde_json::Map<String, Value> = args.env.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let body = json!({
        field: code,
        "wasi": {
            "args": args.args,
            "env": env,
            "stdin": { "base64": base64::engine::general_purpose::STANDARD.encode(&stdin) },
        }
    });
    let client = Client::new(&args.server)?;
    let answer = client.post("/", body.to_string())?;
    if args.server.json {
        print_json(&answer.body);
    } else {
        // A trapped program's output is in the error body; show it too.
        let output = if answer.status == 200 {
            &answer.body
        } else {
            &answer.body["error"]
        };
        print_streams(output);
    }
    if answer.status != 200 {
        return Err(server_error(&answer, 125));
    }
    let exit = answer.body["exit_code"].as_i64().unwrap_or(0);
    // Exit statuses are 0-255 on Unix; WASI programs use the same range.
    Ok(u8::try_from(exit.rem_euclid(256)).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_their_digits_and_non_json_becomes_a_string() {
        assert_eq!(param_token("9007199254740993").get(), "9007199254740993");
        assert_eq!(param_token("-0.0").get(), "-0.0");
        assert_eq!(param_token("NaN").get(), "\"NaN\"");
        assert_eq!(param_token("0x1p-3").get(), "\"0x1p-3\"");
        assert_eq!(param_token(r#"{"utf8":"hi"}"#).get(), r#"{"utf8":"hi"}"#);
    }

    #[test]
    fn table_aligns_columns() {
        let rows = [
            ["double".to_string(), "40".to_string()],
            ["x".to_string(), "1234".to_string()],
        ];
        assert_eq!(
            table(["NAME", "SIZE"], &rows),
            "NAME    SIZE\ndouble  40\nx       1234\n"
        );
    }
}
