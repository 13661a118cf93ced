//! The playground in a real browser: Debian's headless Chromium driven by
//! playwright-core (tests/browser/playground.mjs) against the real server.
//! `.ci/run` installs Chromium and the npm package; without them this test
//! fails and says how to get them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::spawn_app;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

#[tokio::test]
#[ignore = "needs Debian chromium and `npm ci` in tests/browser; `scripts/test` installs them and runs it"]
async fn playground_runs_double_registers_and_calls_in_chromium() {
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "{} not found: install Debian's chromium (`bash .ci/run` does) or set CHROMIUM",
        chromium.display()
    );
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core missing: run `npm ci` in tests/browser (`bash .ci/run` does)"
    );
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/playground");
    std::fs::create_dir_all(&shots).unwrap();
    let _ = std::fs::remove_file(shots.join("playground.png"));

    let app = spawn_app().await;
    let base = app.base.clone();
    let script = dir.join("playground.mjs");
    let shots_arg = shots.clone();
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("node")
            .arg(&script)
            .arg(&base)
            .arg(&shots_arg)
            .env("CHROMIUM", &chromium)
            .current_dir(browser_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start node (Node.js is needed for the browser test)");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let output = child.wait_with_output().unwrap();
                return (
                    status,
                    String::from_utf8_lossy(&output.stdout).into_owned(),
                    String::from_utf8_lossy(&output.stderr).into_owned(),
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the browser test did not finish within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all steps passed"), "{stdout}");
    let shot = std::fs::metadata(shots.join("playground.png")).expect("screenshot saved");
    assert!(shot.len() > 10_000, "screenshot is suspiciously small");

    // What the browser did went through the real API.
    let (_, body) = app.get("/modules/browser_double").await;
    assert_eq!(body["name"], "browser_double");
}

#[tokio::test]
async fn browsers_get_the_page_and_its_assets_with_a_strict_policy() {
    let app = spawn_app().await;
    let page = app
        .client
        .get(app.url("/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/assets/app.js") && html.contains("/assets/style.css"));
    assert!(!html.contains("https://") && !html.contains("http://"), "no CDN");
    for (asset, kind) in [("app.js", "text/javascript"), ("style.css", "text/css")] {
        let response = app
            .client
            .get(app.url(&format!("/assets/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(kind));
        let text = response.text().await.unwrap();
        assert!(!text.contains("https://"), "{asset} loads nothing from elsewhere");
    }
    let (status, body) = app.get("/assets/secret.txt").await;
    assert_eq!((status.as_u16(), crate::helpers::code(&body)), (404, "route_not_found"));
}
