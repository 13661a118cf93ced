//! The source layout keeps its promises: no import circles between the
//! crate's files, and nothing outside `src/engine/` reaches past the
//! engine's front door (`crate::engine::{...}` re-exports) into its files.
//!
//! Reads `src/` and follows every `crate::`/`super::` path in it (test
//! modules excluded), at the granularity of files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root: `["engine", "exec"]`.
type ModPath = Vec<String>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_path(src: &Path, file: &Path) -> ModPath {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts with `crate::` or `super::`, expanded over one
/// level of `{a, b::c}` groups: `super::{x, y::z}` gives `super::x` and
/// `super::y::z`.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts = |word: &str| {
            bytes[i..].iter().take(word.len()).collect::<String>() == word
                && (i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != ':')
        };
        if !(starts("crate::") || starts("super::")) {
            i += 1;
            continue;
        }
        // Read `seg::seg::...` and, at a `{`, the group.
        let mut segments = Vec::new();
        let mut grouped = false;
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            segments.push(bytes[start..j].iter().collect::<String>());
            if bytes.get(j) == Some(&':') && bytes.get(j + 1) == Some(&':') {
                j += 2;
                if bytes.get(j) == Some(&'{') {
                    let end = bytes[j..].iter().position(|&c| c == '}').map_or(bytes.len(), |p| j + p);
                    let group: String = bytes[j + 1..end].iter().collect();
                    for item in group.split(',') {
                        let item: Vec<String> = item
                            .trim()
                            .split("::")
                            .map(|s| s.trim().chars().take_while(|&c| is_ident(c)).collect())
                            .filter(|s: &String| !s.is_empty())
                            .collect();
                        if !item.is_empty() {
                            let mut path = segments.clone();
                            path.extend(item);
                            found.push(path);
                        }
                    }
                    j = end;
                    grouped = true;
                    break;
                }
                continue;
            }
            break;
        }
        if !grouped && segments.len() > 1 {
            found.push(segments);
        }
        i = j.max(i + 1);
    }
    found
}

/// The file a path lands in: the deepest module it names.
fn target(from: &ModPath, is_dir_module: bool, path: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut at: ModPath = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("super") => {
            let mut m = from.clone();
            // In `a/b.rs` (module a::b), `super` is `a`; in `a/mod.rs`
            // (module a), `super` is the crate root.
            if !is_dir_module || !m.is_empty() {
                m.pop();
            }
            m
        }
        _ => return None,
    };
    for segment in &path[1..] {
        if segment == "super" {
            at.pop();
            continue;
        }
        let mut next = at.clone();
        next.push(segment.clone());
        if modules.contains(&next) {
            at = next;
        } else {
            break;
        }
    }
    Some(at)
}

struct Graph {
    edges: BTreeMap<ModPath, BTreeSet<ModPath>>,
    /// `(file, path)` of every reach past the engine's front door.
    engine_reaches: Vec<(String, String)>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_path(&src, f)).collect();
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    let mut engine_reaches = Vec::new();
    for file in &files {
        let from = module_path(&src, file);
        let is_dir_module = matches!(file.file_stem().and_then(|s| s.to_str()), Some("mod"));
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        // A directory module names its own children without `self::`
        // (`pub use exec::LiveInstance;`, `compile::sha256(..)`).
        for child in modules
            .iter()
            .filter(|m| m.len() == from.len() + 1 && m.starts_with(&from))
        {
            let name = child.last().unwrap();
            let needle = format!("{name}::");
            let named = code.match_indices(&needle).any(|(at, _)| {
                let before = code[..at].chars().next_back();
                !before.is_some_and(|c| is_ident(c) || c == ':')
            });
            if named {
                edges.entry(from.clone()).or_default().insert(child.clone());
            }
        }
        for path in paths_in(&code) {
            let Some(to) = target(&from, is_dir_module, &path, &modules) else {
                continue;
            };
            if to != from {
                let inside_engine = from.first().map(String::as_str) == Some("engine");
                if !inside_engine && to.first().map(String::as_str) == Some("engine") && to.len() > 1 {
                    engine_reaches.push((file.display().to_string(), path.join("::")));
                }
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    Graph { edges, engine_reaches }
}

/// One circle in the graph, if there is one.
fn find_cycle(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Option<Vec<ModPath>> {
    fn visit(
        node: &ModPath,
        edges: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        state: &mut BTreeMap<ModPath, u8>,
        stack: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(node, edges, &mut state, &mut stack) {
                return Some(cycle);
            }
        }
    }
    None
}

fn show(m: &ModPath) -> String {
    if m.is_empty() { "crate".into() } else { m.join("::") }
}

#[test]
fn the_crate_has_no_import_circles() {
    let graph = graph();
    assert!(
        graph.edges.len() > 20,
        "the scan found too few files to mean anything: {:?}",
        graph.edges.keys().map(show).collect::<Vec<_>>()
    );
    // The scan sees the edges it should (a check of the checker).
    let exec = vec!["engine".to_string(), "exec".to_string()];
    let store = vec!["engine".to_string(), "store".to_string()];
    assert!(graph.edges[&exec].contains(&store), "engine::exec uses engine::store");
    let engine = vec!["engine".to_string()];
    assert!(
        graph.edges[&engine].contains(&exec),
        "engine/mod.rs re-exports engine::exec"
    );
    if let Some(cycle) = find_cycle(&graph.edges) {
        let shown: Vec<String> = cycle.iter().map(show).collect();
        panic!("import circle: {}", shown.join(" -> "));
    }
}

#[test]
fn nothing_outside_the_engine_reaches_past_its_front_door() {
    let graph = graph();
    assert!(
        graph.engine_reaches.is_empty(),
        "use `crate::engine::{{...}}` (the re-exports of src/engine/mod.rs) instead of: {:?}",
        graph.engine_reaches
    );
}
