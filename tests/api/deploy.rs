//! The deployment in `deploy/`, for real: a PostgreSQL database of the
//! test's own (so that it can be stopped), three node processes of the
//! server binary sharing it, and Debian's nginx in front of them with
//! `deploy/nginx/wasm-exec-api.conf`. The user stories run through the
//! balancer; then one node is killed with SIGKILL while registrations
//! stream in, and the database is stopped and started again under load.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::digests_by_name;
use serde_json::{Value, json};

const DOUBLE: &str =
    r#"(module (func (export "double") (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2))))"#;

const COUNTER: &str = r#"(module (global $n (mut i32) (i32.const 0))
  (func (export "next") (result i32) (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `program` (PostgreSQL's, which refuses to run as root) as the
/// `postgres` user when the test runs as root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL cluster in a temporary directory, on a port of its own.
struct Database {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Database {
    fn bin_dir() -> PathBuf {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server programs (Debian's postgresql; scripts/test installs it)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        found.sort();
        found.pop().expect("no /usr/lib/postgresql/*/bin/initdb")
    }

    fn create() -> Database {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            run({
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(dir.path());
                c
            });
        }
        let bin = Self::bin_dir();
        run({
            let mut c = as_postgres(&bin.join("initdb"));
            c.args(["-U", "root", "-A", "trust", "--no-sync", "-D"])
                .arg(dir.path().join("data"));
            c
        });
        let db = Database {
            dir,
            bin,
            port: free_port(),
        };
        db.start();
        db
    }

    fn url(&self) -> String {
        format!("postgres://root@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run({
            let mut c = as_postgres(&self.bin.join("pg_ctl"));
            c.arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-o", &options, "-l"])
                .arg(self.dir.path().join("log"))
                .args(["-w", "start"]);
            c
        });
    }

    fn stop(&self) {
        run({
            let mut c = as_postgres(&self.bin.join("pg_ctl"));
            c.arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "fast", "-w", "stop"]);
            c
        });
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// A node: the server binary as a process.
struct Node {
    child: Child,
    port: u16,
    name: String,
}

impl Node {
    fn start(name: &str, store: &str) -> Node {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_wasm-exec-api"))
            .args(["--port", &port.to_string(), "--store", store, "--node-id", name])
            .args(["--advertise-url", &format!("http://127.0.0.1:{port}")])
            // As docs/DEPLOY.md runs them: nginx's connections carry the client.
            .args(["--trusted-proxy", "127.0.0.1"])
            .env("WASM_EXEC_ARTIFACT_KEY", "deploy-test-key-0123456789abcdef")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the server binary");
        Node {
            child,
            port,
            name: name.into(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's nginx with the deployment's configuration, pointed at `nodes`.
struct Balancer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(nodes: &[&Node]) -> Balancer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/wasm-exec-api.conf");
        let mut conf = std::fs::read_to_string(&site).unwrap();
        for (i, node) in nodes.iter().enumerate() {
            conf = conf.replace(&format!("127.0.0.1:800{}", i + 1), &format!("127.0.0.1:{}", node.port));
            assert_eq!(
                node.name,
                format!("n{}", i + 1),
                "the configuration names nodes n1, n2, n3"
            );
        }
        conf = conf.replace("listen 8000;", &format!("listen 127.0.0.1:{port};"));
        std::fs::write(dir.path().join("site.conf"), conf).unwrap();
        let d = dir.path().display();
        let user = if is_root() { "user root;" } else { "" };
        let main = format!(
            "{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/site.conf;
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|p| Command::new(p).arg("-v").output().is_ok())
            .expect("Debian's nginx (scripts/test installs it)");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        Balancer { child, port, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Balancer {
    /// SIGTERM: nginx's master stops its workers (SIGKILL would orphan them).
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    match request.send().await {
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(_) => (StatusCode::BAD_GATEWAY, Value::Null),
    }
}

async fn ready(client: &reqwest::Client, url: &str) {
    for _ in 0..400 {
        if client.get(url).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} never answered 200");
}

fn register(name: &str, wat: &str, hosts: &[&str]) -> Value {
    json!({"module_name": name, "wat": wat, "host_modules": hosts})
}

fn execute(name: &str, function: &str, params: Value) -> Value {
    json!({"module_name": name, "function_name": function, "params": params})
}

/// The database, three nodes on it, nginx in front; every part answering.
async fn cluster() -> (Database, Vec<Node>, Balancer, reqwest::Client) {
    let db = Database::create();
    let url = db.url();
    let nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| Node::start(n, &url)).collect();
    let balancer = Balancer::start(&nodes.iter().collect::<Vec<_>>());
    let client = reqwest::Client::new();
    for node in &nodes {
        ready(&client, &node.url("/readyz")).await;
    }
    ready(&client, &balancer.url("/healthz")).await;
    (db, nodes, balancer, client)
}

/// Register, execute, link, race, delete and instances through nginx; then
/// a node killed with SIGKILL while registrations stream in: nothing
/// acknowledged is lost and the other nodes keep serving.
#[tokio::test]
#[ignore = "needs Debian's nginx; `scripts/test` installs it and runs it"]
async fn three_nodes_behind_nginx_serve_the_user_stories_and_survive_a_sigkill() {
    let (_db, mut nodes, lb, client) = cluster().await;
    let post = |path: &str, body: Value| send(client.post(lb.url(path)).json(&body));

    // Register, execute (on whichever node nginx picks), link.
    let (status, body) = post("/register", register("utils", DOUBLE, &[])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let quad = r#"(module (import "utils" "double" (func $d (param i32) (result i32)))
        (func (export "quad") (param i32) (result i32) (call $d (call $d (local.get 0)))))"#;
    let (status, body) = post("/register", register("quad", quad, &["utils"])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for i in 0..9 {
        let (status, body) = post("/execute", execute("quad", "quad", json!([i]))).await;
        assert_eq!((status, &body["results"]), (StatusCode::OK, &json!([4 * i])), "{body}");
    }
    // Every node runs it, asked directly.
    for node in &nodes {
        let (status, body) = send(
            client
                .post(node.url("/execute"))
                .json(&execute("utils", "double", json!([5]))),
        )
        .await;
        assert_eq!(
            (status, &body["results"]),
            (StatusCode::OK, &json!([10])),
            "{}: {body}",
            node.name
        );
    }

    // One name raced on all three nodes at once: exactly one wins.
    let race = nodes.iter().map(|node| {
        let body = register("contested", DOUBLE, &[]);
        send(client.post(node.url("/register")).json(&body))
    });
    let outcomes: Vec<(StatusCode, Value)> = futures::future::join_all(race).await;
    let won = outcomes.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let lost = outcomes
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && b["error"]["code"] == "module_exists")
        .count();
    assert_eq!((won, lost), (1, 2), "{outcomes:?}");

    // Delete through the balancer: every node answers module_not_found
    // within a second.
    let (status, body) = send(client.delete(lb.url("/modules/contested"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let deleted = Instant::now();
    for node in &nodes {
        loop {
            let (status, body) = send(client.post(node.url("/execute")).json(&execute(
                "contested",
                "double",
                json!([1]),
            )))
            .await;
            if status == StatusCode::NOT_FOUND && body["error"]["code"] == "module_not_found" {
                break;
            }
            assert!(
                deleted.elapsed() < Duration::from_secs(1),
                "{} still runs a deleted module",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Instances: made on whichever node, then called through the balancer,
    // which routes every call to the node that holds the instance.
    for _ in 0..3 {
        let (status, created) = post("/instances", json!({"wat": COUNTER})).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        for expected in 1..=6 {
            let (status, body) = post(&format!("/instances/{id}/call"), json!({"function_name": "next"})).await;
            assert_eq!(
                (status, &body["results"]),
                (StatusCode::OK, &json!([expected])),
                "{id}: {body}"
            );
        }
        // Asked of a node that does not hold it, directly: 421 naming the owner.
        let owner = id.split('.').next().unwrap().to_string();
        let other = nodes.iter().find(|n| n.name != owner).unwrap();
        let (status, body) = send(
            client
                .post(other.url(&format!("/instances/{id}/call")))
                .json(&json!({"function_name": "next"})),
        )
        .await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
        let holder = nodes.iter().find(|n| n.name == owner).unwrap();
        assert_eq!(body["error"]["owner_url"], holder.url(""), "{body}");
    }

    // Environments: made on whichever node, filled and called through the
    // balancer, which routes every request on one to the node that holds it.
    for _ in 0..3 {
        let (status, created) = post("/environments", json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        let (status, body) = post(
            &format!("/environments/{id}/instances"),
            json!({"wat": COUNTER, "as": "c"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{id}: {body}");
        for expected in 1..=3 {
            let (status, body) = post(&format!("/environments/{id}/call"), json!({"function_name": "next"})).await;
            assert_eq!(
                (status, &body["results"]),
                (StatusCode::OK, &json!([expected])),
                "{id}: {body}"
            );
        }
    }

    // SIGKILL one node while registrations stream in through the balancer.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged_after_kill = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (client, url) = (client.clone(), lb.url("/register"));
        let (stop, killed, after) = (stop.clone(), killed.clone(), acknowledged_after_kill.clone());
        async move {
            let mut acknowledged = BTreeMap::new();
            let mut refused = Vec::new();
            for i in 0..10_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let wat = format!(r#"(module (func (export "n") (result i32) i32.const {i}))"#);
                let (status, body) = send(client.post(&url).json(&register(&format!("m{i}"), &wat, &[]))).await;
                if status == StatusCode::CREATED {
                    acknowledged.insert(format!("m{i}"), body["sha256"].as_str().unwrap_or("").to_string());
                    if killed.load(Ordering::SeqCst) {
                        after.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    refused.push(format!("{status} {body}"));
                }
            }
            (acknowledged, refused)
        }
    });
    let started = Instant::now();
    loop {
        let (_, list) = send(client.get(nodes[0].url("/modules"))).await;
        if list["modules"].as_array().is_some_and(|m| m.len() >= 30) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "registrations do not flow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nodes[1].child.kill().unwrap(); // SIGKILL
    nodes[1].child.wait().unwrap();
    killed.store(true, Ordering::SeqCst);
    let started = Instant::now();
    while acknowledged_after_kill.load(Ordering::SeqCst) < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the other nodes stopped taking registrations"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, refused) = writer.await.unwrap();
    // At most the requests in flight on the killed node failed.
    assert!(refused.len() <= 2, "{refused:?}");

    // Every acknowledged registration is stored, intact and runnable. A
    // node's listing is its index, which the last registrations (made on
    // another node) reach within the coherence bound of a second.
    let listed = Instant::now();
    let stored = loop {
        let (_, list) = send(client.get(nodes[2].url("/modules"))).await;
        let stored = digests_by_name(&list);
        if acknowledged.keys().all(|name| stored.contains_key(name)) || listed.elapsed() > Duration::from_secs(1) {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (name, sha) in &acknowledged {
        assert_eq!(
            stored.get(name),
            Some(sha),
            "acknowledged module {name} is missing or changed"
        );
        let (status, body) = post("/execute", execute(name, "n", json!([]))).await;
        let n: i64 = name[1..].parse().unwrap();
        assert_eq!(
            (status, &body["results"]),
            (StatusCode::OK, &json!([n])),
            "{name}: {body}"
        );
    }
}

/// The database stops under load and starts again: calls of modules the
/// nodes have loaded never fail, registrations answer `503
/// store_unavailable` meanwhile (and `/readyz` 503), and every node takes
/// registrations again by itself once the database is back.
#[tokio::test]
#[ignore = "needs Debian's nginx; `scripts/test` installs it and runs it"]
async fn the_database_stops_under_load_and_starts_again() {
    let (db, nodes, lb, client) = cluster().await;
    let (status, body) = send(client.post(lb.url("/register")).json(&register("utils", DOUBLE, &[]))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for node in &nodes {
        let (status, body) = send(
            client
                .post(node.url("/execute"))
                .json(&execute("utils", "double", json!([1]))),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", node.name);
    }

    // Load: calls through the balancer, all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (client, url, stop) = (client.clone(), lb.url("/execute"), stop.clone());
        async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = send(client.post(&url).json(&execute("utils", "double", json!([21])))).await;
                if status == StatusCode::OK && body["results"] == json!([42]) {
                    ok += 1;
                } else {
                    failed.push(format!("{status} {body}"));
                }
            }
            (ok, failed)
        }
    });

    db.stop();
    let (status, body) = send(client.post(lb.url("/register")).json(&register("during", DOUBLE, &[]))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")),
        "{body}"
    );
    for node in &nodes {
        let (status, _) = send(client.get(node.url("/readyz"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", node.name);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.start();

    for node in &nodes {
        let started = Instant::now();
        loop {
            let body = register(&format!("after-{}", node.name), DOUBLE, &[]);
            let (status, answer) = send(client.post(node.url("/register")).json(&body)).await;
            if status == StatusCode::CREATED {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} never took a registration again: {status} {answer}",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, _) = send(client.get(node.url("/readyz"))).await;
        assert_eq!(status, StatusCode::OK, "{}", node.name);
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "calls failed while the database was down: {failed:?}"
    );
    assert!(ok > 0);
    // And every node sees what the others registered meanwhile.
    for node in &nodes {
        let started = Instant::now();
        loop {
            let (_, list) = send(client.get(node.url("/modules"))).await;
            let n = list["modules"].as_array().map_or(0, Vec::len);
            if n == 4 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{}: {list}", node.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
