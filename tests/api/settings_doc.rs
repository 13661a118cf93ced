//! Each setting is described once, by its doc comment in `src/config.rs`;
//! the table in docs/API.md ("Limits and settings") is generated from the
//! command line and must match it. Run with `UPDATE_DOCS=1` to rewrite the
//! table after changing a setting.

use clap::CommandFactory;
use wasm_exec_api::config::Settings;

const START: &str = "<!-- settings table: generated from src/config.rs by tests/api/settings_doc.rs -->";
const END: &str = "<!-- end of settings table -->";

/// The table, one row per flag, in declaration order.
fn render() -> String {
    let command = Settings::command();
    let mut rows = vec![
        "| Flag | Environment variable | Default | Meaning |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let flag = match arg.get_short() {
            Some(short) => format!("`-{short}, --{long}`"),
            None => format!("`--{long}`"),
        };
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = if arg.is_hide_default_value_set() || defaults.is_empty() {
            "see meaning".to_string()
        } else {
            format!("`{}`", defaults.join(","))
        };
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string().replace('\n', " ").replace("  ", " "))
            .unwrap_or_default();
        rows.push(format!("| {flag} | {env} | {default} | {help} |"));
    }
    rows.join("\n")
}

#[test]
fn the_settings_table_in_api_md_is_generated_from_the_flags() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (Some(start), Some(end)) = (doc.find(START), doc.find(END)) else {
        panic!("docs/API.md lacks the settings table markers:\n{START}\n...\n{END}");
    };
    let current = doc[start + START.len()..end].trim();
    let wanted = render();
    assert!(
        wanted.lines().count() > 25,
        "the command line lost its flags:\n{wanted}"
    );
    if current != wanted {
        if std::env::var_os("UPDATE_DOCS").is_some() {
            let updated = format!("{}{START}\n{wanted}\n{}", &doc[..start], &doc[end..]);
            std::fs::write(path, updated).unwrap();
            return;
        }
        panic!(
            "docs/API.md's settings table is out of date; run `UPDATE_DOCS=1 cargo test settings_table` to regenerate it from src/config.rs. Wanted:\n{wanted}"
        );
    }
}
