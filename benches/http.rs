//! The HTTP benchmark: `cargo bench --bench http` (needs `wrk`:
//! `apt-get install wrk`).
//!
//! Starts the release server and the floor server (`examples/floor.rs`: bare
//! axum + wasmtime, built by this benchmark) on loopback, prepares modules,
//! then drives every scenario with wrk and prints one table: requests/s,
//! p50 and p99 latency, peak RSS of the server during the scenario, and
//! requests/s as a ratio to the floor's matching scenario measured in the
//! same run. `fib(27)` is also timed natively in this process.
//!
//! The servers run pinned to `BENCH_SERVER_CPUS` (default `0`) and wrk to
//! `BENCH_WRK_CPUS` (default `1`) with `taskset`: when wrk shares the
//! server's cores, the server's own overhead hides behind wrk's.
//!
//! Environment: `BENCH_SECONDS` (per scenario, default 5), `BENCH_CONNECTIONS`
//! (default 16), `BENCH_ONLY` (run scenarios whose name contains it, or
//! one of its comma-separated parts),
//! `BENCH_ROUNDS` (default 3), `BENCH_SERVER_CPUS`, `BENCH_WRK_CPUS`,
//! `BENCH_SERVER_BIN` (another build of the server to run instead of this
//! tree's, such as an earlier commit's, to compare two builds against the
//! same floor). All scenarios run once per round, in turn, and
//! each reports its median round, with the slowest and fastest round beside
//! it: on a shared virtual machine throughput drifts by 10-20% over a minute,
//! and interleaving spreads that drift over every scenario, floor included,
//! instead of letting it land on whichever ran last.

use base64::Engine as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/api/fixtures/origin.rs"]
mod origin;
use origin::{DOUBLE_HEX, DOUBLE_TWICE_HEX};

const FIB_WAT: &str = r#"(module (func $fib (export "fib") (param i32) (result i32)
  (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
    (then (local.get 0))
    (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1))) (call $fib (i32.sub (local.get 0) (i32.const 2))))))))"#;

const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const COUNTER_WAT: &str = r#"(module (global $n (mut i32) (i32.const 0))
  (func (export "inc") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#;

/// A Lua request generator that sends a never-seen module every time: the
/// origin's `double` with its constant replaced by a unique 5-byte LEB128.
const UNIQUE_MODULE_LUA: &str = r#"
counter = 0
local function leb5(n)
  local s = ""
  for i = 1, 4 do
    s = s .. string.format("%02x", (n % 128) + 128)
    n = math.floor(n / 128)
  end
  return s .. string.format("%02x", n % 128)
end
request = function()
  counter = counter + 1
  local seed = counter * 65536 + math.random(0, 65535)
  local hex = "0061736d0100000001060160017f017f03020100070a0106646f75626c6500000a0d010b00200041" .. leb5(seed % 2147483647) .. "6c0b"
  local body = '{"wasm_hex":"' .. hex .. '","function_name":"double","params":[2]}'
  return wrk.format("POST", "/", {["Content-Type"] = "application/json"}, body)
end
"#;

/// The batch scenarios, whose calls/s are printed beside single requests'.
const BATCH_100: &str = "POST /batch of 100 double";
const BATCH_1000: &str = "POST /batch of 1000 double";
const FLOOR_HEALTHZ: &str = "floor: GET /healthz";
/// The same bare endpoint under 128 connections: what the HTTP stack and the
/// kernel alone lose between 16 and 128 connections on these cores, beside
/// which our never-seen 128/16 ratio is read.
const FLOOR_HEALTHZ_128: &str = "floor: GET /healthz, 128 conns";
const FLOOR_CALL: &str = "floor: POST /execute double (cached InstancePre)";
const FLOOR_COMPILE: &str = "floor: POST / never-seen module (compiles each)";
const FLOOR_FIB: &str = "floor: POST /execute fib(27), 1 conn";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    /// SIGTERM (nginx's master stops its workers on it; SIGKILL would
    /// orphan them), then SIGKILL if it is still there.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which server a scenario drives.
#[derive(Clone, Copy)]
enum Target {
    /// `examples/floor.rs`.
    Floor,
    /// Our server on its embedded store.
    Ours,
    /// One of the PostgreSQL nodes, directly.
    PgNode,
    /// nginx (`deploy/nginx/`) in front of both PostgreSQL nodes.
    Balancer,
}

/// Two nodes on one PostgreSQL database (`BENCH_PG`, default the local
/// server; a database of its own is created and dropped) behind nginx
/// with the deployment's configuration, all pinned like the server: the
/// same cores serve one node or two plus the balancer, so the rows show
/// what the shared store and the extra hop cost, not scaling.
struct Cluster {
    nodes: Vec<Server>,
    balancer: Server,
    admin_url: String,
    database: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(dir: &Path) -> Option<Cluster> {
        let admin_url = std::env::var("BENCH_PG").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into());
        let database = format!("wasm_exec_bench_{}", std::process::id());
        let created = Command::new("psql")
            .args([admin_url.as_str(), "-qc", &format!("CREATE DATABASE {database}")])
            .status();
        if !created.is_ok_and(|s| s.success()) {
            eprintln!("no PostgreSQL at {admin_url} (BENCH_PG): the cluster rows are left out");
            return None;
        }
        let store = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{database}"),
            None => return None,
        };
        let nodes: Vec<Server> = (1..=2)
            .map(|n| {
                let node_dir = dir.join(format!("n{n}"));
                std::fs::create_dir_all(&node_dir).unwrap();
                start_server_with(
                    &node_dir,
                    &[
                        "--store",
                        &store,
                        "--node-id",
                        &format!("n{n}"),
                        "--artifact-key",
                        "bench-cluster-key-0123456789abcdef",
                    ],
                )
            })
            .collect();
        let conf_dir = tempfile::tempdir().unwrap();
        let balancer = start_nginx(conf_dir.path(), &nodes)?;
        let cluster = Cluster {
            nodes,
            balancer,
            admin_url,
            database,
            _dir: conf_dir,
        };
        let client = reqwest::blocking::Client::new();
        let registered = client
            .post(format!("{}/register", cluster.nodes[0].base))
            .json(&serde_json::json!({"module_name": "double", "wasm_hex": DOUBLE_HEX}))
            .send()
            .unwrap();
        assert!(registered.status().is_success(), "cluster setup failed");
        Some(cluster)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = Command::new("psql")
            .args([
                self.admin_url.as_str(),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {}", self.database),
            ])
            .status();
    }
}

/// Debian's nginx with `deploy/nginx/wasm-exec-api.conf` in front of
/// `nodes` (named n1, n2), pinned like the server.
fn start_nginx(dir: &Path, nodes: &[Server]) -> Option<Server> {
    if Command::new("nginx").arg("-v").output().is_err() {
        eprintln!("no nginx (apt-get install nginx-light): the balancer row is left out");
        return None;
    }
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/wasm-exec-api.conf");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut conf: String = std::fs::read_to_string(site)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("8003") && !l.contains("n3"))
        .map(|l| format!("{l}\n"))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let address = node.base.trim_start_matches("http://");
        conf = conf.replace(&format!("127.0.0.1:800{}", i + 1), address);
    }
    conf = conf.replace("listen 8000;", &format!("listen 127.0.0.1:{port};"));
    let d = dir.display();
    let user = if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n") {
        "user root;"
    } else {
        ""
    };
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "{user}\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\naccess_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\nfastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n{conf}}}\n"
        ),
    )
    .unwrap();
    let child = Command::new("taskset")
        .args(["-c", &cpus("BENCH_SERVER_CPUS", "0"), "nginx", "-p"])
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start nginx");
    // Stopped by its Drop however this ends.
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::blocking::Client::new();
    for _ in 0..200 {
        if client.get(format!("{}/healthz", server.base)).send().is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nginx did not start");
}

struct Row {
    name: String,
    rps: f64,
    /// Slowest and fastest round's requests/s.
    spread: (f64, f64),
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mib: f64,
    errors: u64,
    /// The floor row this one is compared with.
    compare: String,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass
    // nothing. Run only when asked to benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("the benchmark needs wrk: apt-get install wrk");
        std::process::exit(2);
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let connections: u64 = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    // The floor first: building it can take minutes, longer than the live
    // instances made below stay alive while idle (`--instance-idle-secs`).
    let floor = start_floor();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let client = reqwest::blocking::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        let response = client
            .post(format!("{}{path}", server.base))
            .json(&body)
            .send()
            .unwrap();
        let status = response.status();
        let text = response.text().unwrap();
        assert!(status.is_success(), "setup {path} failed: {status} {text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    post(
        "/register",
        serde_json::json!({"module_name": "double", "wasm_hex": DOUBLE_HEX}),
    );
    // The origin's linking example imports `double` from `utils`.
    post(
        "/register",
        serde_json::json!({"module_name": "utils", "wasm_hex": DOUBLE_HEX}),
    );
    post(
        "/register",
        serde_json::json!({"module_name": "c", "wat": "(module (func (export \"f\") (param i32) (result i32) (i32.add (local.get 0) (i32.const 1))))"}),
    );
    post(
        "/register",
        serde_json::json!({"module_name": "b", "host_modules": ["c"], "wat": "(module (import \"c\" \"f\" (func $f (param i32) (result i32))) (func (export \"f\") (param i32) (result i32) (call $f (local.get 0))))"}),
    );
    post(
        "/register",
        serde_json::json!({"module_name": "a", "host_modules": ["b"], "wat": "(module (import \"b\" \"f\" (func $f (param i32) (result i32))) (func (export \"f\") (param i32) (result i32) (call $f (local.get 0))))"}),
    );
    post("/register", serde_json::json!({"module_name": "fib", "wat": FIB_WAT}));
    post(
        "/register",
        serde_json::json!({"module_name": "hello", "wat": HELLO_WAT}),
    );
    let instance = post("/instances", serde_json::json!({"wat": COUNTER_WAT}));
    let instance_id = instance["id"].as_str().unwrap().to_string();
    // An environment: the counter, and a module that calls it through a
    // live import (a call across two instances of one store).
    let environment = post("/environments", serde_json::json!({}));
    let environment_id = environment["id"].as_str().unwrap().to_string();
    post(
        &format!("/environments/{environment_id}/instances"),
        serde_json::json!({"wat": COUNTER_WAT, "name": "counter", "as": "counter"}),
    );
    post(
        &format!("/environments/{environment_id}/instances"),
        serde_json::json!({"name": "caller", "wat": "(module (import \"counter\" \"inc\" (func $inc (result i32))) (func (export \"inc\") (result i32) (call $inc)))"}),
    );

    let json_post = |body: String| {
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [=[{body}]=]\n"
        )
    };
    // A batch of `n` calls of the registered `double`.
    let batch_of = |n: usize| {
        let call = r#"{"module_name":"double","function_name":"double","params":[2]}"#;
        json_post(format!(r#"{{"calls":[{}]}}"#, vec![call; n].join(",")))
    };
    let double_call = json_post(r#"{"module_name":"double","function_name":"double","params":[2]}"#.into());
    let fib_call = json_post(r#"{"module_name":"fib","function_name":"fib","params":[27]}"#.into());
    // (name, on the floor?, path, wrk script, connections, the floor row it is compared with)
    let scenarios: Vec<(&str, Target, &str, String, u64, &str)> = vec![
        (FLOOR_HEALTHZ, Target::Floor, "/healthz", String::new(), connections, ""),
        (FLOOR_HEALTHZ_128, Target::Floor, "/healthz", String::new(), 128, ""),
        (
            FLOOR_CALL,
            Target::Floor,
            "/execute",
            double_call.clone(),
            connections,
            "",
        ),
        (
            FLOOR_COMPILE,
            Target::Floor,
            "/",
            UNIQUE_MODULE_LUA.to_string(),
            connections,
            "",
        ),
        (FLOOR_FIB, Target::Floor, "/execute", fib_call.clone(), 1, ""),
        (
            "GET /healthz",
            Target::Ours,
            "/healthz",
            String::new(),
            connections,
            FLOOR_HEALTHZ,
        ),
        (
            "POST / double, cached",
            Target::Ours,
            "/",
            json_post(format!(
                r#"{{"wasm_hex":"{DOUBLE_HEX}","function_name":"double","params":[2]}}"#
            )),
            connections,
            FLOOR_CALL,
        ),
        (
            "POST /execute double",
            Target::Ours,
            "/execute",
            double_call.clone(),
            connections,
            FLOOR_CALL,
        ),
        (BATCH_100, Target::Ours, "/batch", batch_of(100), connections, ""),
        (BATCH_1000, Target::Ours, "/batch", batch_of(1000), connections, ""),
        (
            "POST / linking example",
            Target::Ours,
            "/",
            json_post(format!(
                r#"{{"wasm_hex":"{DOUBLE_TWICE_HEX}","function_name":"double_twice","params":[2],"host_modules":["utils"]}}"#
            )),
            connections,
            FLOOR_CALL,
        ),
        (
            "POST /execute 3-deep chain",
            Target::Ours,
            "/execute",
            json_post(r#"{"module_name":"a","function_name":"f","params":[2]}"#.into()),
            connections,
            FLOOR_CALL,
        ),
        (
            "POST / never-seen module",
            Target::Ours,
            "/",
            UNIQUE_MODULE_LUA.to_string(),
            connections,
            FLOOR_COMPILE,
        ),
        (
            "POST / never-seen module, 128 conns",
            Target::Ours,
            "/",
            UNIQUE_MODULE_LUA.to_string(),
            128,
            FLOOR_COMPILE,
        ),
        (
            "POST /execute WASI hello",
            Target::Ours,
            "/execute",
            json_post(r#"{"module_name":"hello"}"#.into()),
            connections,
            FLOOR_CALL,
        ),
        (
            "POST /instances/{id}/call",
            Target::Ours,
            "/instances/ID/call",
            json_post(r#"{"function_name":"inc"}"#.into()),
            connections,
            FLOOR_CALL,
        ),
        (
            "POST /environments/{id}/call",
            Target::Ours,
            "/environments/ENV/call",
            json_post(r#"{"instance":"counter","function_name":"inc"}"#.into()),
            connections,
            FLOOR_CALL,
        ),
        (
            "POST /environments/{id}/call, across instances",
            Target::Ours,
            "/environments/ENV/call",
            json_post(r#"{"instance":"caller","function_name":"inc"}"#.into()),
            connections,
            FLOOR_CALL,
        ),
        (
            "POST /execute fib(27), 1 conn",
            Target::Ours,
            "/execute",
            fib_call,
            1,
            FLOOR_FIB,
        ),
        (
            "POST /execute double, one node on PostgreSQL",
            Target::PgNode,
            "/execute",
            double_call.clone(),
            connections,
            "POST /execute double",
        ),
        (
            "POST /execute double, two PostgreSQL nodes behind nginx",
            Target::Balancer,
            "/execute",
            double_call.clone(),
            connections,
            "POST /execute double",
        ),
    ];

    let scenarios: Vec<_> = scenarios
        .into_iter()
        .filter(|s| only.split(',').any(|part| s.0.contains(part)))
        .collect();
    let cluster = if scenarios
        .iter()
        .any(|s| matches!(s.1, Target::PgNode | Target::Balancer))
    {
        Cluster::start(dir.path())
    } else {
        None
    };
    let scenarios: Vec<_> = scenarios
        .into_iter()
        .filter(|s| cluster.is_some() || matches!(s.1, Target::Floor | Target::Ours))
        .collect();
    let mut runs: Vec<Vec<Row>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for ((name, target, path, script, conns, compare), runs) in scenarios.iter().zip(&mut runs) {
            let target = match (target, &cluster) {
                (Target::Floor, _) => &floor,
                (Target::Ours, _) => &server,
                (Target::PgNode, Some(cluster)) => &cluster.nodes[0],
                (Target::Balancer, Some(cluster)) => &cluster.balancer,
                (_, None) => unreachable!("cluster scenarios are dropped without a cluster"),
            };
            let path = path.replace("ENV", &environment_id).replace("ID", &instance_id);
            let script_path = dir.path().join("script.lua");
            std::fs::write(&script_path, script).unwrap();
            reset_peak_rss(target.child.id());
            let mut row = run_wrk(
                name,
                &format!("{}{path}", target.base),
                &script_path,
                *conns,
                seconds,
                target.child.id(),
            );
            row.compare = compare.to_string();
            eprintln!("round {round}/{rounds} {name}: {:.0} req/s", row.rps);
            runs.push(row);
        }
    }
    let rows: Vec<Row> = runs.into_iter().map(median_round).collect();

    let native = native_fib_ms();
    print_table(&rows, native, seconds, connections);
    if only.is_empty() || "large".contains(&only) {
        large_wasi_first_call(&server, dir.path(), &client);
    }
    if only.is_empty() || "restart".contains(&only) {
        restart_with_many_modules(server, dir.path(), &client);
    }
}

/// A large WASI program, generated as C and built with clang: `functions`
/// functions behind a table so none is dropped, and a `main` that calls
/// some and prints. `seed` changes every function's constants, so two
/// builds share no compiled function (wasmtime's incremental cache would
/// otherwise make the second compile look cheap).
fn large_c_program(dir: &Path, functions: usize, seed: usize) -> Option<Vec<u8>> {
    let mut c = String::from("#include <stdio.h>\n");
    for k in 0..functions {
        c.push_str(&format!(
            "int f{k}(int x) {{ int s = {}; for (int i = 0; i < (x & 7); i++) {{ switch ((x + i + {k}) % 5) {{ case 0: s += i * {}; break; case 1: s ^= x << 2; break; case 2: s -= {k}; break; case 3: s = s * 3 + 1; break; default: s += x; }} }} return s; }}\n",
            k * seed,
            k + seed
        ));
    }
    let names: Vec<String> = (0..functions).map(|k| format!("f{k}")).collect();
    c.push_str(&format!("int (*table[])(int) = {{{}}};\n", names.join(",")));
    c.push_str(&format!(
        "int main(void) {{ int t = 0; for (int k = 0; k < {functions}; k += 97) t += table[k](k); printf(\"%d\\n\", t); return 0; }}\n"
    ));
    let source = dir.join(format!("large{seed}.c"));
    let out = dir.join(format!("large{seed}.wasm"));
    std::fs::write(&source, c).unwrap();
    let status = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O1", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .ok()?;
    status.success().then(|| std::fs::read(&out).unwrap())
}

/// The first call of a never-seen multi-megabyte WASI program (it runs on
/// the interpreter) against waiting for its compile (`POST /inspect` of a
/// twin build, which compiles and runs nothing), on the same server.
fn large_wasi_first_call(server: &Server, dir: &Path, client: &reqwest::blocking::Client) {
    const FUNCTIONS: usize = 15_000;
    let builds: Vec<Option<Vec<u8>>> = std::thread::scope(|scope| {
        let jobs: Vec<_> = [1, 2]
            .into_iter()
            .map(|seed| scope.spawn(move || large_c_program(dir, FUNCTIONS, seed)))
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let (Some(first), Some(twin)) = (&builds[0], &builds[1]) else {
        println!("\nlarge WASI program: not measured, clang with wasi-libc is needed (scripts/test installs it)");
        return;
    };
    let b64 = |wasm: &[u8]| base64::engine::general_purpose::STANDARD.encode(wasm);
    let time = |path: &str, body: serde_json::Value| {
        let t = Instant::now();
        let response: serde_json::Value = client
            .post(format!("{}{path}", server.base))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        (t.elapsed(), response)
    };
    let (first_call, answer) = time("/", serde_json::json!({"wasm_base64": b64(first)}));
    let (compile, _) = time("/inspect", serde_json::json!({"wasm_base64": b64(twin)}));
    println!();
    println!(
        "large WASI program ({:.1} MB, {FUNCTIONS} functions from C): first call {:.1} ms on the {} tier (stdout {}), its compile alone {:.1} ms: {:.1}x sooner",
        first.len() as f64 / 1e6,
        first_call.as_secs_f64() * 1000.0,
        answer["stats"]["tier"],
        answer["stdout"],
        compile.as_secs_f64() * 1000.0,
        compile.as_secs_f64() / first_call.as_secs_f64()
    );
}

/// Registers 1,000 modules, restarts the server on the same data directory,
/// and reports how long start-up took and whether the first `/execute` of a
/// module had to compile it.
fn restart_with_many_modules(server: Server, dir: &Path, client: &reqwest::blocking::Client) {
    const MODULES: usize = 1000;
    for i in 0..MODULES {
        let wat =
            format!(r#"(module (func (export "f") (param i32) (result i32) (i32.add (local.get 0) (i32.const {i}))))"#);
        let body = serde_json::json!({"module_name": format!("m{i}"), "wat": wat});
        let response = client
            .post(format!("{}/register", server.base))
            .json(&body)
            .send()
            .unwrap();
        assert!(
            response.status().is_success(),
            "register m{i}: {}",
            response.text().unwrap()
        );
    }
    drop(server);
    let started = Instant::now();
    let server = start_server(dir);
    let ready = started.elapsed();
    let mut first_calls = Vec::new();
    for name in ["m0", "m500", "m999"] {
        let t = Instant::now();
        let body = serde_json::json!({"module_name": name, "function_name": "f", "params": [1]});
        let response: serde_json::Value = client
            .post(format!("{}/execute", server.base))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        first_calls.push(format!(
            "{name}: {:.2} ms, compile = {}",
            t.elapsed().as_secs_f64() * 1000.0,
            response["stats"]["compile"]
        ));
    }
    println!();
    println!(
        "restart with {} registered modules: listening after {:.0} ms; first /execute of {}",
        MODULES + 7,
        ready.as_secs_f64() * 1000.0,
        first_calls.join("; ")
    );
}

/// Starts the release binary on a free loopback port with its registry in
/// `dir`, and waits until it logs that it is listening.
fn start_server(dir: &Path) -> Server {
    start_server_with(dir, &[])
}

/// [`start_server`] with more arguments.
fn start_server_with(dir: &Path, args: &[&str]) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("taskset")
        .args([
            "-c",
            &cpus("BENCH_SERVER_CPUS", "0"),
            &std::env::var("BENCH_SERVER_BIN")
                .ok()
                .filter(|bin| !bin.is_empty())
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_wasm-exec-api").into()),
        ])
        .args(["--port", &port.to_string(), "--data-dir"])
        .arg(dir)
        // wrk is one address standing in for many clients: the per-client
        // shares (made to tell clients apart) would cap it as one.
        .args(["--client-share", "1024", "--client-queue-depth", "1024"])
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the server binary");
    let mut child = child;
    // Drain the log so the pipe never fills; watch for readiness.
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = std::io::sink();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("listening") {
                let _ = ready_tx.send(());
            }
            let _ = writeln!(sink, "{line}");
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server did not start");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Resets the kernel's peak-RSS mark (VmHWM) so each scenario reports its own.
fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn run_wrk(name: &str, url: &str, script: &Path, conns: u64, seconds: u64, pid: u32) -> Row {
    let mut cmd = Command::new("taskset");
    cmd.args([
        "-c",
        &cpus("BENCH_WRK_CPUS", "1"),
        "wrk",
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if std::fs::metadata(script).map(|m| m.len() > 0).unwrap_or(false) {
        cmd.arg("-s").arg(script);
    }
    let output = cmd.arg(url).output().expect("wrk failed to run");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let number_after = |key: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
            .and_then(|v| parse_duration_or_number(&v))
    };
    let errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Row {
        name: name.to_string(),
        rps: number_after("Requests/sec:").unwrap_or(f64::NAN),
        spread: (f64::NAN, f64::NAN),
        p50_ms: number_after("50%").unwrap_or(f64::NAN),
        p99_ms: number_after("99%").unwrap_or(f64::NAN),
        peak_rss_mib: peak_rss_mib(pid),
        errors,
        compare: String::new(),
    }
}

/// Parses wrk's `123.45us` / `1.2ms` / `2.00s` into milliseconds, or a plain number.
fn parse_duration_or_number(v: &str) -> Option<f64> {
    for (suffix, factor) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] {
        if let Some(n) = v.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    v.parse().ok()
}

fn native_fib(n: u32) -> u32 {
    if n < 2 {
        n
    } else {
        native_fib(n - 1) + native_fib(n - 2)
    }
}

/// Median time of native `fib(27)` over several runs, in milliseconds.
fn native_fib_ms() -> f64 {
    let mut times: Vec<f64> = (0..21)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(native_fib(std::hint::black_box(27)));
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

/// The round with the median requests/s, carrying the spread of all rounds.
fn median_round(mut rows: Vec<Row>) -> Row {
    rows.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let spread = (rows[0].rps, rows[rows.len() - 1].rps);
    let mut median = rows.swap_remove(rows.len() / 2);
    median.spread = spread;
    median
}

fn print_table(rows: &[Row], native_fib_ms: f64, seconds: u64, connections: u64) {
    println!();
    println!(
        "wrk -t1 -c{connections} -d{seconds}s on CPUs {} against servers on CPUs {}, loopback",
        cpus("BENCH_WRK_CPUS", "1"),
        cpus("BENCH_SERVER_CPUS", "0")
    );
    println!();
    println!(
        "| scenario | requests/s (median round) | slowest–fastest round | ratio | p50 ms | p99 ms | peak RSS MiB | non-2xx |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ratio = rows
            .iter()
            .find(|f| !r.compare.is_empty() && f.name == r.compare)
            .map(|f| format!("{:.2}", r.rps / f.rps))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {ratio} | {:.3} | {:.3} | {:.1} | {} |",
            r.name, r.rps, r.spread.0, r.spread.1, r.p50_ms, r.p99_ms, r.peak_rss_mib, r.errors
        );
    }
    println!();
    println!(
        "ratio: to the floor's matching scenario; the PostgreSQL rows to `POST /execute double` (one node, embedded store). The balancer row's peak RSS is nginx's."
    );
    let rps = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.rps);
    if let (Some(new), Some(health)) = (rps("POST / never-seen module"), rps("GET /healthz")) {
        println!();
        println!("never-seen modules / our /healthz: {:.2}", new / health);
    }
    if let (Some(many), Some(few)) = (
        rps("POST / never-seen module, 128 conns"),
        rps("POST / never-seen module"),
    ) {
        println!(
            "never-seen modules, 128 connections / {connections} connections: {:.2}",
            many / few
        );
    }
    if let (Some(many), Some(few)) = (rps(FLOOR_HEALTHZ_128), rps(FLOOR_HEALTHZ)) {
        println!(
            "the floor's bare endpoint, 128 connections / {connections} connections: {:.2} (the HTTP stack's own loss)",
            many / few
        );
    }
    if let Some(single) = rps("POST /execute double") {
        println!();
        for (name, size) in [(BATCH_100, 100.0), (BATCH_1000, 1000.0)] {
            if let Some(batches) = rps(name) {
                println!(
                    "{name}: {:.0} calls/s, {:.1}x single `POST /execute double` requests ({single:.0}/s)",
                    batches * size,
                    batches * size / single
                );
            }
        }
    }
    let p50 = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.p50_ms);
    if let (Some(ours), Some(floor)) = (p50("POST /execute fib(27), 1 conn"), p50(FLOOR_FIB)) {
        println!();
        println!(
            "fib(27) p50: ours {ours:.2} ms, floor (bare wasmtime call, same fuel and epoch settings) {floor:.2} ms: {:.2}x; native {native_fib_ms:.2} ms",
            ours / floor
        );
    }
}

/// A `taskset` CPU list from the environment.
fn cpus(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// Builds and starts `examples/floor.rs` on a free port, pinned like the
/// server.
fn start_floor() -> Server {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--example", "floor"])
        .current_dir(manifest)
        .status()
        .expect("cannot run cargo to build the floor server");
    assert!(status.success(), "building examples/floor.rs failed");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{manifest}/target"));
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new("taskset")
        .args(["-c", &cpus("BENCH_SERVER_CPUS", "0")])
        .arg(format!("{target}/release/examples/floor"))
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the floor server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "the floor server did not start: {line}");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}
