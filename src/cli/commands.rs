//! The client subcommands: each builds a request, sends it with
//! [`Client`], and prints the answer as a person or a script wants it.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use base64::Engine as _;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::args::{
    CallArgs, Command, EnvAddArgs, EnvCallArgs, EnvCommand, EnvCreateArgs, EnvIdArgs, JobCommand, JobIdArgs,
    JobSubmitArgs, ModulesArgs, RegisterArgs, RunArgs,
};
use super::client::{Client, Failure, server_error};

/// Runs a client subcommand, returning the process exit code.
pub fn run_client(command: Command) -> u8 {
    let result = match command {
        Command::Serve(_) => unreachable!("serve is handled by main"),
        Command::Call(args) => call(args),
        Command::Register(args) => register(args),
        Command::Modules(args) => modules(args),
        Command::Run(args) => run(args),
        Command::Env(EnvCommand::Create(args)) => env_create(args),
        Command::Env(EnvCommand::Add(args)) => env_add(args),
        Command::Env(EnvCommand::Call(args)) => env_call(args),
        Command::Env(EnvCommand::Show(args)) => env_show(args),
        Command::Env(EnvCommand::Delete(args)) => env_delete(args),
        Command::Job(JobCommand::Submit(args)) => job_submit(args),
        Command::Job(JobCommand::Status(args)) => job_status(args),
        Command::Job(JobCommand::Watch(args)) => job_watch(args),
        Command::Job(JobCommand::Cancel(args)) => job_cancel(args),
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

/// A module's exports, one line each, as `register` and `env add` show them.
fn print_exports(body: &Value) {
    for export in body["exports"].as_array().into_iter().flatten() {
        println!(
            "  export {} {} {}",
            plain(&export["kind"]),
            plain(&export["name"]),
            plain(&export["type"])
        );
    }
}

/// A JSON array of strings as plain strings (none when it is not an array).
fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().map(plain).collect()
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

/// Prints a call's answer: the JSON with `--json`, else WASI output and
/// one result per line. A failed call is an error with exit code 1.
fn print_call(answer: &super::client::Answer, json: bool) -> Result<u8, Failure> {
    if json {
        print_json(&answer.body);
    }
    if answer.status != 200 {
        return Err(server_error(answer, 1));
    }
    if !json {
        print_streams(&answer.body);
        for value in answer.body["results"].as_array().into_iter().flatten() {
            println!("{}", plain(value));
        }
    }
    Ok(0)
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
        params: Params,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        host_modules: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        result_format: Option<&'a str>,
    }
    /// JSON tokens, or one WAVE text: the params as written between a
    /// call's parentheses.
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Params {
        Json(Vec<Box<RawValue>>),
        Wave(String),
    }
    let params = if args.wave {
        Params::Wave(args.params.join(", "))
    } else {
        Params::Json(args.params.iter().map(|p| param_token(p)).collect())
    };
    let body = Body {
        code: serde_json::Map::from_iter([(field.to_string(), Value::String(code))]),
        function_name: &args.function,
        params,
        host_modules: &args.host_modules,
        result_format: args.wave.then_some("wave"),
    };
    let text = serde_json::to_string(&body).map_err(|e| Failure::usage(format!("cannot encode the request: {e}")))?;
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let answer = client.post("/", text)?;
    print_call(&answer, args.server.json)
}

fn job_submit(args: JobSubmitArgs) -> Result<u8, Failure> {
    let (field, code) = code_field(&args.file)?;
    let params: Vec<Box<RawValue>> = args.params.iter().map(|p| param_token(p)).collect();
    let mut call = json!({field: code, "function_name": args.function, "params": params});
    if !args.host_modules.is_empty() {
        call["host_modules"] = json!(args.host_modules);
    }
    if let Some(ms) = args.timeout_ms {
        call["limits"] = json!({"timeout_ms": ms});
    }
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let answer = client.post("/jobs", json!({"call": call}).to_string())?;
    if args.server.json {
        print_json(&answer.body);
    }
    if answer.status != 202 {
        return Err(server_error(&answer, 1));
    }
    if !args.server.json {
        println!("{}", plain(&answer.body["id"]));
    }
    Ok(0)
}

/// Prints a job as a person reads it: its status (and progress or reason),
/// then, once it ran, its result as `call` prints one. The exit code is
/// 0 for a job that is done (or not finished yet), 1 for a failed or
/// cancelled one.
fn print_job(job: &Value) -> u8 {
    let status = plain(&job["status"]);
    let mut line = status.clone();
    if let Some(progress) = job.get("progress").filter(|p| p.is_object()) {
        line.push_str(&format!(" ({} of {} calls)", progress["done"], progress["of"]));
    }
    if let Some(reason) = job["reason"].as_str() {
        line.push_str(&format!(": {reason}"));
    }
    eprintln!("{line}");
    let result = &job["result"];
    if let Some(error) = result.get("error") {
        eprintln!(
            "{}: {}",
            plain(&error["code"]),
            plain(&error["message"]).lines().next().unwrap_or_default()
        );
    } else if !result.is_null() {
        print_streams(result);
        for value in result["results"].as_array().into_iter().flatten() {
            println!("{}", plain(value));
        }
    }
    u8::from(matches!(status.as_str(), "failed" | "cancelled"))
}

fn job_status(args: JobIdArgs) -> Result<u8, Failure> {
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let answer = client.get(&format!("/jobs/{}", args.id))?;
    if args.server.json {
        print_json(&answer.body);
    }
    if answer.status != 200 {
        return Err(server_error(&answer, 1));
    }
    Ok(if args.server.json { 0 } else { print_job(&answer.body) })
}

fn job_watch(args: JobIdArgs) -> Result<u8, Failure> {
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let mut last = Value::Null;
    let answer = client.events(&format!("/jobs/{}/events", args.id), |name, data| {
        if args.server.json {
            println!("{data}");
        } else if let Ok(job) = serde_json::from_str::<Value>(data) {
            match job.get("progress").filter(|_| name == "progress") {
                Some(progress) => eprintln!("progress ({} of {} calls)", progress["done"], progress["of"]),
                None if !job["status"].as_str().is_some_and(is_final) => eprintln!("{name}"),
                None => {}
            }
            last = job;
        }
    })?;
    if let Some(answer) = answer {
        return Err(server_error(&answer, 1));
    }
    if args.server.json || last.is_null() {
        return Ok(0);
    }
    Ok(print_job(&last))
}

fn is_final(status: &str) -> bool {
    matches!(status, "done" | "failed" | "cancelled")
}

fn job_cancel(args: JobIdArgs) -> Result<u8, Failure> {
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let answer = client.delete(&format!("/jobs/{}", args.id))?;
    if args.server.json {
        print_json(&answer.body);
    }
    if answer.status != 200 {
        return Err(server_error(&answer, 1));
    }
    if !args.server.json {
        println!("{}", plain(&answer.body["status"]));
    }
    Ok(0)
}

fn env_create(args: EnvCreateArgs) -> Result<u8, Failure> {
    let body = match args.memory_bytes {
        Some(bytes) => json!({"limits": {"memory_bytes": bytes}}),
        None => json!({}),
    };
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let answer = client.post("/environments", body.to_string())?;
    if answer.status != 201 {
        return Err(server_error(&answer, 1));
    }
    if args.server.json {
        print_json(&answer.body);
    } else {
        println!("{}", plain(&answer.body["id"]));
    }
    Ok(0)
}

fn env_add(args: EnvAddArgs) -> Result<u8, Failure> {
    let mut body = serde_json::Map::new();
    match (&args.file, args.module) {
        (Some(file), _) => {
            let (field, code) = code_field(file)?;
            body.insert(field.into(), Value::String(code));
        }
        (None, Some(module)) => {
            body.insert("module_name".into(), Value::String(module));
        }
        (None, None) => return Err(Failure::usage("give a module file or --module NAME")),
    }
    if let Some(name) = args.name {
        body.insert("name".into(), Value::String(name));
    }
    if let Some(expose_as) = args.expose_as {
        body.insert("as".into(), Value::String(expose_as));
    }
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let answer = client.post(
        &format!("/environments/{}/instances", args.env),
        Value::Object(body).to_string(),
    )?;
    if args.server.json {
        print_json(&answer.body);
    }
    if answer.status != 201 {
        return Err(server_error(&answer, 1));
    }
    if !args.server.json {
        let b = &answer.body;
        let name = b["name"].as_str().map(|n| format!(" `{n}`")).unwrap_or_default();
        let exposed = strings(&b["exposed_as"]);
        let exposed = if exposed.is_empty() {
            String::new()
        } else {
            format!(", exposed as {}", exposed.join(", "))
        };
        println!("instance #{}{name} of {}{exposed}", b["index"], plain(&b["module"]));
        print_exports(b);
    }
    Ok(0)
}

fn env_call(args: EnvCallArgs) -> Result<u8, Failure> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        instance: Option<&'a str>,
        function_name: &'a str,
        params: Vec<Box<RawValue>>,
    }
    let body = Body {
        instance: args.instance.as_deref(),
        function_name: &args.function,
        params: args.params.iter().map(|p| param_token(p)).collect(),
    };
    let text = serde_json::to_string(&body).map_err(|e| Failure::usage(format!("cannot encode the request: {e}")))?;
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let answer = client.post(&format!("/environments/{}/call", args.env), text)?;
    print_call(&answer, args.server.json)
}

fn env_show(args: EnvIdArgs) -> Result<u8, Failure> {
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let answer = client.get(&format!("/environments/{}", args.env))?;
    if answer.status != 200 {
        return Err(server_error(&answer, 1));
    }
    if args.server.json {
        print_json(&answer.body);
        return Ok(0);
    }
    let rows: Vec<[String; 4]> = answer.body["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let exposed = strings(&m["exposed_as"]);
            [
                m["index"].to_string(),
                m["name"].as_str().unwrap_or("-").to_string(),
                plain(&m["module"]),
                if exposed.is_empty() {
                    "-".into()
                } else {
                    exposed.join(",")
                },
            ]
        })
        .collect();
    print!("{}", table(["INDEX", "NAME", "MODULE", "EXPOSED AS"], &rows));
    Ok(0)
}

fn env_delete(args: EnvIdArgs) -> Result<u8, Failure> {
    let client = Client::new(&args.server.server, args.server.token.clone())?;
    let answer = client.delete(&format!("/environments/{}", args.env))?;
    if answer.status != 204 {
        return Err(server_error(&answer, 1));
    }
    Ok(0)
}

fn register(args: RegisterArgs) -> Result<u8, Failure> {
    let (field, code) = code_field(&args.file)?;
    let body = json!({ "module_name": args.name, field: code, "host_modules": args.host_modules });
    let client = Client::new(&args.server.server, args.server.token.clone())?;
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
        print_exports(b);
    }
    Ok(0)
}

fn modules(args: ModulesArgs) -> Result<u8, Failure> {
    let client = Client::new(&args.server.server, args.server.token.clone())?;
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
            let hosts = strings(&m["host_modules"]);
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
    let client = Client::new(&args.server.server, args.server.token.clone())?;
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
