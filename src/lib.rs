//! wasm-exec-api: run WebAssembly over HTTP.
//!
//! A client posts a module (binary as hex or base64, or WebAssembly text), a
//! function name and JSON params; the server infers each param's type from
//! the export's signature, runs the call in a sandbox under limits, and
//! answers with typed JSON results. Modules can be registered by name,
//! persisted, and linked to each other.
//!
//! # Layout
//!
//! - [`cli`] — the command line: the server, and client subcommands.
//! - [`config`] — every flag and environment variable, with defaults.
//! - [`startup`] — builds the application from settings, binds, serves.
//! - [`api`] — HTTP only: routes, request and response types, the one
//!   `ApiError` and `ErrorCode`. Handlers decode, resolve, run, respond.
//! - [`resolve`] — where code comes from (a registered name, or inline code
//!   with host modules), resolved once into what a call needs.
//! - [`engine`] — the only module that knows wasmtime: compile cache, limits,
//!   linking checks, execution, JSON ⇄ value conversion.
//! - [`instances`] — live instances kept across calls, with caps and an
//!   idle reaper.
//! - [`registry`] — named modules over the `ModuleStore` trait, whose default
//!   backend is an embedded redb file.
//! - [`json_int`] — unsigned integers in bodies, also written `4096.0`.
//! - [`telemetry`] — logging: the line format and the request line.
//! - [`log_buffer`] — log lines on their way to stdout, a buffer per thread.
//! - [`per_thread`] — counters and lists each thread writes in a cell of
//!   its own, so that cores do not contend on the request path.

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod instances;
pub mod json_int;
pub mod log_buffer;
pub mod per_thread;
pub mod registry;
pub mod resolve;
pub mod startup;
pub mod telemetry;
