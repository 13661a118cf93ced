//! Integration tests: each starts the real server and speaks HTTP to it.

mod auth;
mod browser;
mod budget;
mod cli;
mod error_codes;
mod errors;
mod fuzzish;
mod helpers;
mod hostile;
mod instances;
mod layout;
mod limits;
mod linking;
mod memory;
mod observability;
mod openapi;
mod persistence;
mod process;
mod registry;
mod schemathesis;
mod settings_doc;
mod spec_scripts;
mod spectest;
mod tiers;
mod values;
mod wasi;
