//! The `wasm-exec-api` binary: the server by default, or a client
//! subcommand (see [`wasm_exec_api::cli`]).

use std::process::ExitCode;

use clap::Parser;
use wasm_exec_api::cli::{Cli, Command};
use wasm_exec_api::config::Settings;
use wasm_exec_api::startup::{self, Application};
use wasm_exec_api::telemetry;

/// mimalloc instead of glibc's malloc: a request allocates and frees many
/// small objects (HTTP parts, JSON, a store), and glibc's malloc and free
/// were about 12% of a whole `/execute` request's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.command {
        None => cli.serve,
        Some(Command::Serve(settings)) => *settings,
        // The client is blocking and needs no runtime of its own.
        Some(client) => return ExitCode::from(wasm_exec_api::cli::run_client(client)),
    };
    let served = serve(settings);
    // Lines still in the log buffer go out before the process ends.
    telemetry::flush();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    telemetry::init();
    let runtime = startup::runtime_builder(&settings).build()?;
    runtime.block_on(async {
        let app = Application::build(settings).await?;
        app.run_until_stopped().await?;
        Ok(())
    })
}
