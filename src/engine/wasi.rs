//! WASI preview 1 for guests that import `wasi_snapshot_preview1`.
//!
//! Each execution (or live instance) gets its own context built from the
//! request: arguments, environment variables and stdin bytes the client sent,
//! and capped in-memory stdout and stderr. Nothing of the host is inherited:
//! no preopened directories, no host environment, no sockets (preview 1 has
//! none), no host stdio. Clocks and randomness are the host's, as a program
//! expects.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// The import module name of WASI preview 1.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// Makes `proc_exit` end the program with whatever status it gives, as a
/// process's exit does. wasmtime-wasi refuses statuses of 126 and more
/// with an error (its command line keeps those for its own failures), so a
/// C program calling `exit(200)` would fail instead of exiting with 200.
pub(crate) fn define_proc_exit<T: 'static>(linker: &mut wasmtime::Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(WASI_MODULE, "proc_exit", |status: i32| -> wasmtime::Result<()> {
        Err(wasmtime_wasi::I32Exit(status).into())
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

/// What a request says about a WASI program's world.
#[derive(Debug, Clone, Default)]
pub struct WasiConfig {
    /// `argv[0]`, shown to the program as its own name.
    pub program: String,
    /// `argv[1..]`.
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub stdin: Vec<u8>,
}

/// Output captured from one call: what the program wrote to stdout and
/// stderr since the previous call, each up to the cap.
#[derive(Debug, Clone, Default)]
pub struct WasiOutput {
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
}

/// A WASI context plus handles on its output buffers.
pub struct WasiState {
    pub ctx: WasiP1Ctx,
    stdout: CappedOutput,
    stderr: CappedOutput,
}

impl WasiState {
    /// Builds a context from `config`, capping each output stream at
    /// `output_cap` bytes.
    /// Takes the config by value: stdin can be megabytes and is moved, not copied.
    /// Boxed: a store's state holds it, and every store (most have no
    /// WASI) would otherwise be as large as a WASI context and be copied
    /// whole when made.
    pub fn new(config: WasiConfig, output_cap: usize) -> Box<Self> {
        let (mut builder, stdout, stderr) = builder(config, output_cap);
        Box::new(WasiState {
            ctx: builder.build_p1(),
            stdout,
            stderr,
        })
    }

    /// Takes what was written since the last call (for live instances, each
    /// call reports its own output).
    pub fn take_output(&self) -> WasiOutput {
        WasiOutput::take(&self.stdout, &self.stderr)
    }
}

/// The WASI 0.2 world of a component: the same world a preview 1 program
/// gets (see [`builder`]), plus the table its resources (streams, pollables)
/// live in.
pub struct ComponentWasi {
    pub ctx: wasmtime_wasi::WasiCtx,
    pub table: wasmtime_wasi::ResourceTable,
    stdout: CappedOutput,
    stderr: CappedOutput,
}

impl ComponentWasi {
    pub fn new(config: WasiConfig, output_cap: usize) -> Self {
        let (mut builder, stdout, stderr) = builder(config, output_cap);
        ComponentWasi {
            ctx: builder.build(),
            table: wasmtime_wasi::ResourceTable::new(),
            stdout,
            stderr,
        }
    }

    /// Takes what was written since the last call.
    pub fn take_output(&self) -> WasiOutput {
        WasiOutput::take(&self.stdout, &self.stderr)
    }
}

/// The one description of a guest's WASI world, for both preview 1 and 0.2:
/// the request's arguments, environment and stdin, capped in-memory stdout
/// and stderr, and nothing else. No directory is preopened and no socket
/// address is allowed (a builder allows none until told to), so the
/// filesystem and socket interfaces that WASI 0.2 links exist but reach
/// nothing.
fn builder(config: WasiConfig, output_cap: usize) -> (WasiCtxBuilder, CappedOutput, CappedOutput) {
    let stdout = CappedOutput::new(output_cap);
    let stderr = CappedOutput::new(output_cap);
    let mut builder = WasiCtxBuilder::new();
    builder.arg(&config.program);
    builder.args(&config.args);
    for (key, value) in &config.env {
        builder.env(key, value);
    }
    // Reading past the end of the given bytes is end-of-file, never a wait.
    builder.stdin(MemoryInputPipe::new(config.stdin));
    builder.stdout(stdout.clone());
    builder.stderr(stderr.clone());
    // Said outright rather than left to defaults: no socket of any kind.
    builder.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    (builder, stdout, stderr)
}

impl WasiOutput {
    /// What `stdout` and `stderr` kept since they were last taken (both
    /// tiers' WASI worlds report output so).
    pub(crate) fn take(stdout: &CappedOutput, stderr: &CappedOutput) -> Self {
        let (stdout, stdout_truncated) = stdout.take();
        let (stderr, stderr_truncated) = stderr.take();
        WasiOutput {
            stdout,
            stdout_truncated,
            stderr,
            stderr_truncated,
        }
    }
}

/// An output stream that keeps the first `cap` bytes and drops the rest,
/// remembering that it did. The guest never sees an error: a program that
/// prints a lot runs to completion and the client learns its output was cut.
/// (wasmtime's `MemoryOutputPipe` instead traps the guest when full.)
#[derive(Clone)]
pub(crate) struct CappedOutput {
    cap: usize,
    buffer: Arc<Mutex<Vec<u8>>>,
    truncated: Arc<AtomicBool>,
}

impl CappedOutput {
    pub(crate) fn new(cap: usize) -> Self {
        CappedOutput {
            cap,
            buffer: Arc::default(),
            truncated: Arc::default(),
        }
    }

    pub(crate) fn push(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.cap.saturating_sub(buffer.len());
        if bytes.len() > room {
            self.truncated.store(true, Ordering::Relaxed);
        }
        buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    pub(crate) fn take(&self) -> (Vec<u8>, bool) {
        let bytes = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        (bytes, self.truncated.swap(false, Ordering::Relaxed))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always ready for a large write: excess is dropped, not refused.
        Ok(1 << 20)
    }
}

#[async_trait::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_output_keeps_the_head_and_flags_truncation() {
        let out = CappedOutput::new(5);
        out.push(b"hel");
        out.push(b"lo world");
        assert_eq!(out.take(), (b"hello".to_vec(), true));
        assert_eq!(out.take(), (Vec::new(), false), "take resets the buffer and the flag");
    }
}
