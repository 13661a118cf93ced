//! The `wasm-exec-api` binary: parse settings, start logging, serve.

use clap::Parser;
use wasm_exec_api::config::Settings;
use wasm_exec_api::startup::Application;
use wasm_exec_api::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    telemetry::init();
    let app = Application::build(settings).await?;
    app.run_until_stopped().await?;
    Ok(())
}
