//! The repository stands alone and its modules import in one direction.
//!
//! - Every relative link in the Markdown files and the doc comments points at a file that
//!   exists (and, for a link into a Markdown file with an anchor, at a heading that exists);
//!   every `*.md` file named in them exists in the repository (R0.1: the project keeps its
//!   own documents, and cites no file a user does not have).
//! - No two modules of a crate import each other, directly or round a longer circle: the
//!   top-level modules of each crate, and the files of each module folder, form a graph
//!   without cycles (docs/STYLE.md: shared types in leaf modules).
//! - The crates depend on each other only as the architecture says ([`ALLOWED`]): the engine
//!   is the pure core and depends on no other presence crate, the runtime and the storage
//!   backends on the engine alone, and so on up to the programs, which may use anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Folders that hold no documentation or code of the project's own.
fn skipped(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.')
        || name == "target"
        || path.ends_with("fuzz/corpus")
        || path.ends_with("fuzz/artifacts")
        || path.ends_with("fuzz/coverage")
        || name == "node_modules"
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if skipped(&path) {
            continue;
        }
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn repository_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    files(&root(), &mut out);
    out.sort();
    out
}

/// The documentation text of a file: a Markdown file whole, the doc comments of a Rust file.
fn documentation(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("md") => Some(text),
        Some("rs") => Some(
            text.lines()
                .map(str::trim_start)
                .filter_map(|l| l.strip_prefix("//!").or_else(|| l.strip_prefix("///")))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

/// The targets of the Markdown links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].trim().to_string());
        }
    }
    targets
}

/// The `*.md` file names cited in `text` (`docs/SPEC.md`, `README.md`), outside URLs.
fn cited_md_files(text: &str) -> Vec<String> {
    let mut cited = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || "._/-:".contains(c))) {
        if word.contains("://") {
            continue;
        }
        let word = word.trim_start_matches(':').trim_end_matches([':', '.']);
        if word.ends_with(".md") && word.len() > 3 {
            cited.push(word.to_string());
        }
    }
    cited
}

/// A heading's anchor as rendered for links: lower case, spaces to dashes, punctuation gone.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(markdown).unwrap_or_default();
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            out.insert(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// Rust doc links name items (`crate::Engine`, `Self::open`), not files.
fn is_item_path(target: &str) -> bool {
    !target.contains('/') && !target.contains(".md") && !target.starts_with('#')
}

#[test]
fn every_relative_link_and_cited_document_exists() {
    let root = root();
    let all = repository_files();
    let names: BTreeSet<String> =
        all.iter().filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from)).collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &all {
        let Some(text) = documentation(file) else { continue };
        let dir = file.parent().unwrap();
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        for target in link_targets(&text) {
            if target.is_empty() || is_external(&target) || is_item_path(&target) {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() { file.clone() } else { dir.join(path) };
            checked += 1;
            if !resolved.exists() {
                broken.push(format!("{shown}: link to {target}: no such file"));
                continue;
            }
            if let Some(fragment) = fragment {
                if resolved.extension().is_some_and(|e| e == "md") && !anchors(&resolved).contains(fragment) {
                    broken.push(format!("{shown}: link to {target}: no such heading"));
                }
            }
        }
        for cited in cited_md_files(&text) {
            checked += 1;
            let exists = match cited.contains('/') {
                true if cited.starts_with('.') => dir.join(&cited).exists(),
                true => root.join(&cited).exists() || dir.join(&cited).exists(),
                false => names.contains(&cited),
            };
            if !exists {
                broken.push(format!("{shown}: cites {cited}, which is not in the repository"));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links and citations found: is the scan looking in the right place?"
    );
    assert!(broken.is_empty(), "{} broken links or citations:\n{}", broken.len(), broken.join("\n"));
}

// The scanner itself: a broken link and a missing citation are found.
#[test]
fn the_link_scanner_finds_links_citations_and_anchors() {
    let text = "See [the spec](docs/SPEC.md#r1-identities) and [web](https://x.y/A.md); DESIGN.md, \
                `crate::Engine` and [`Engine`](crate::Engine).";
    assert_eq!(link_targets(text), ["docs/SPEC.md#r1-identities", "https://x.y/A.md", "crate::Engine"]);
    assert_eq!(cited_md_files(text), ["docs/SPEC.md", "DESIGN.md"]);
    assert_eq!(anchor(" R1 Identities and limits"), "r1-identities-and-limits");
    assert_eq!(anchor(" Why NATS, and the limits (2.9)"), "why-nats-and-the-limits-29");
}

/// Rust source with comments and string literals removed, so that only real paths count.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn rust_text(path: &Path) -> String {
    let mut out = String::new();
    if path.is_dir() {
        let mut all = Vec::new();
        files(path, &mut all);
        for file in all.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
            out.push_str(&code_only(&std::fs::read_to_string(file).unwrap()));
        }
    } else {
        out = code_only(&std::fs::read_to_string(path).unwrap());
    }
    out
}

/// The modules `text` names after `prefix` (`crate::` or `super::`), among `modules`.
fn named_modules(text: &str, prefix: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        // `crate::{a, b::c}` names a and b.
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap_or("").trim())
                .collect(),
            None => vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")],
        };
        named.extend(names.into_iter().filter(|n| modules.contains(*n)).map(String::from));
    }
    named
}

/// The modules of a folder: `x.rs` and `x/` are module `x`; `lib.rs`, `main.rs` and `mod.rs`
/// are the folder itself.
fn modules_of(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if path.is_dir()
            || (path.extension().is_some_and(|e| e == "rs")
                && !["lib", "main", "mod"].contains(&name.as_str()))
        {
            modules.insert(name, path);
        }
    }
    modules
}

/// A cycle in `edges`, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

/// The import graph of the modules in `dir`, through `prefix` (`crate::` for a crate's
/// top-level modules, `super::` for the files of a module folder).
fn import_graph(dir: &Path, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules_of(dir);
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(name, path)| {
            let mut named = named_modules(&rust_text(path), prefix, &names);
            named.remove(name);
            (name.clone(), named)
        })
        .collect()
}

#[test]
fn no_module_imports_run_in_a_circle() {
    let root = root();
    let mut graphs = 0;
    let mut cycles = Vec::new();
    let mut crates: Vec<PathBuf> = repository_files()
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "lib.rs" || n == "main.rs"))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    crates.dedup();
    for src in crates {
        let mut folders = vec![(src.clone(), "crate::")];
        let mut all = Vec::new();
        files(&src, &mut all);
        folders.extend(
            all.iter()
                .filter(|p| p.ends_with("mod.rs"))
                .map(|p| (p.parent().unwrap().to_path_buf(), "super::")),
        );
        for (dir, prefix) in folders {
            graphs += 1;
            if let Some(cycle) = find_cycle(&import_graph(&dir, prefix)) {
                cycles.push(format!(
                    "{}: {}",
                    dir.strip_prefix(&root).unwrap().display(),
                    cycle.join(" -> ")
                ));
            }
        }
    }
    assert!(graphs >= 10, "only {graphs} module graphs found");
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

// The cycle finder itself.
#[test]
fn the_cycle_finder_finds_a_circle_and_no_more() {
    let graph = |pairs: &[(&str, &str)]| {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in pairs {
            edges.entry(a.to_string()).or_default().insert(b.to_string());
        }
        edges
    };
    assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        find_cycle(&graph(&[("lockstep", "model"), ("model", "subject"), ("subject", "lockstep")])),
        Some(vec!["lockstep".into(), "model".into(), "subject".into(), "lockstep".into()])
    );
    let modules: BTreeSet<String> = ["engine", "runtime", "notice"].iter().map(|s| s.to_string()).collect();
    let text = "use crate::{engine::Engine, notice::Names};\nlet x = crate::runtime::Handle::new(); foocrate::engine";
    assert_eq!(named_modules(text, "crate::", &modules), modules);
}

/// The presence crates each workspace member may depend on (in `[dependencies]`, and in
/// target-specific dependencies; dev-dependencies are free, so that tests may use a store or
/// the testkit). `None`: any. A member missing from the table fails the test, so that a new
/// crate takes its place in the graph on purpose.
const ALLOWED: &[(&str, Option<&[&str]>)] = &[
    // The pure core: commands, decide, apply, state, events, codec, the store trait.
    ("presence-engine", Some(&[])),
    // Stores implement the engine's EventStore trait.
    ("presence-storage-mem", Some(&["presence-engine"])),
    ("presence-storage-sled", Some(&["presence-engine"])),
    ("presence-storage-nats", Some(&["presence-engine"])),
    // Turns, group commit, snapshot policy, replies, stats, sharding in one process.
    ("presence-runtime", Some(&["presence-engine"])),
    // Test helpers and the reference model, property tests and trace runner.
    ("presence-testkit", Some(&["presence-engine", "presence-storage-mem"])),
    (
        "presence-conformance",
        Some(&["presence-engine", "presence-runtime", "presence-storage-mem", "presence-storage-sled"]),
    ),
    // Nodes that own the shards of a deployment on NATS JetStream.
    ("presence-cluster", Some(&["presence-engine", "presence-runtime", "presence-storage-nats"])),
    // The WebSocket gateway. Its edge to the cluster (the gateway inside a node talks to the
    // shards' owners through the cluster's client) is to go once the gateway owns a backend
    // trait that the runtime and the cluster implement.
    ("presence-gateway", Some(&["presence-engine", "presence-runtime", "presence-cluster"])),
    // Programs: the command line, the benchmarks, the peers the load test races against.
    ("presence-cli", None),
    ("presence-benches", None),
    ("presence-redis-peer", None),
];

/// The lines of the `[section]`s of a TOML file, by section name (the text between the
/// brackets, trimmed); a section that appears twice has its lines together.
fn toml_sections(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = match line.find('#') {
            Some(at) => &line[..at],
            None => line,
        }
        .trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim_matches(['[', ']']).trim().to_string();
            sections.entry(current.clone()).or_default();
        } else if !line.is_empty() {
            sections.entry(current.clone()).or_default().push(line.to_string());
        }
    }
    sections
}

/// A `key = "value"` string value of `lines`.
fn toml_string(lines: &[String], key: &str) -> Option<String> {
    lines.iter().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The package a manifest describes and the presence crates among its normal dependencies
/// (`[dependencies]`, `[dependencies.NAME]` and the target-specific ones), by package name:
/// a dependency renamed with `package = "..."` counts as that package.
fn presence_dependencies(manifest: &str) -> (String, BTreeSet<String>) {
    let sections = toml_sections(manifest);
    let package = sections.get("package").and_then(|lines| toml_string(lines, "name")).unwrap_or_default();
    let mut found = BTreeSet::new();
    for (section, lines) in &sections {
        let is_dependencies = |s: &str| s == "dependencies" || s.ends_with(".dependencies");
        if is_dependencies(section) {
            for line in lines {
                let Some((key, value)) = line.split_once('=') else { continue };
                let key = key.trim().split('.').next().unwrap_or("").trim_matches('"');
                let renamed = value.split("package").nth(1).and_then(|rest| {
                    let rest = rest.trim_start().strip_prefix('=')?.trim_start().strip_prefix('"')?;
                    rest.split('"').next()
                });
                found.insert(renamed.unwrap_or(key).to_string());
            }
        } else if let Some((table, name)) = section.rsplit_once('.') {
            if is_dependencies(table) {
                found.insert(
                    toml_string(lines, "package").unwrap_or_else(|| name.trim_matches('"').to_string()),
                );
            }
        }
    }
    found.retain(|name| name.starts_with("presence-"));
    (package, found)
}

/// The workspace's members, as the root manifest lists them.
fn workspace_members(root_manifest: &str) -> Vec<String> {
    let at = root_manifest.find("members").expect("the root manifest lists its members");
    let list = &root_manifest[at..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    list.lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.split(','))
        .map(|member| member.trim().trim_matches('"').to_string())
        .filter(|member| !member.is_empty())
        .collect()
}

/// What is wrong with the edges of `package` (its presence dependencies) against [`ALLOWED`].
fn crate_graph_violations(package: &str, dependencies: &BTreeSet<String>) -> Vec<String> {
    match ALLOWED.iter().find(|(name, _)| *name == package) {
        None => vec![format!(
            "{package} is not in the crate graph (ALLOWED in conformance/tests/repository.rs): \
             add it with the presence crates it may depend on"
        )],
        Some((_, None)) => Vec::new(),
        Some((_, Some(allowed))) => dependencies
            .iter()
            .filter(|dependency| !allowed.contains(&dependency.as_str()))
            .map(|dependency| {
                format!(
                    "{package} -> {dependency}: an edge the crate graph does not allow ({package} may \
                     depend on {})",
                    match allowed.is_empty() {
                        true => "no other presence crate".to_string(),
                        false => allowed.join(", "),
                    }
                )
            })
            .collect(),
    }
}

#[test]
fn the_crates_depend_on_each_other_only_as_the_architecture_says() {
    let root = root();
    let members = workspace_members(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap());
    assert!(members.len() >= 10, "only {} workspace members found: {members:?}", members.len());
    let mut violations = Vec::new();
    let mut edges = 0;
    for member in &members {
        let manifest = std::fs::read_to_string(root.join(member).join("Cargo.toml")).unwrap();
        let (package, dependencies) = presence_dependencies(&manifest);
        assert!(!package.is_empty(), "{member}/Cargo.toml names no package");
        edges += dependencies.len();
        violations.extend(crate_graph_violations(&package, &dependencies));
    }
    assert!(
        edges >= 10,
        "only {edges} edges between presence crates found: is the scan reading the manifests?"
    );
    assert!(violations.is_empty(), "the crate graph is broken:\n{}", violations.join("\n"));
}

// The manifest reader and the table check themselves: normal dependencies in every form count,
// dev-dependencies do not, and an edge outside the table is named.
#[test]
fn the_crate_graph_check_reads_manifests_and_finds_a_forbidden_edge() {
    let manifest = r#"
[package]
name = "presence-runtime"

[dependencies]
presence-engine.workspace = true   # the core
presence-storage-sled = { path = "../storage-sled" }
gateway = { package = "presence-gateway", path = "../gateway" }
serde.workspace = true

[target.'cfg(unix)'.dependencies]
presence-cluster = { workspace = true }

[dependencies.presence-storage-nats]
workspace = true

[dev-dependencies]
presence-storage-mem.workspace = true
presence-testkit = { workspace = true }
"#;
    let (package, dependencies) = presence_dependencies(manifest);
    assert_eq!(package, "presence-runtime");
    let expected = [
        "presence-cluster",
        "presence-engine",
        "presence-gateway",
        "presence-storage-nats",
        "presence-storage-sled",
    ];
    assert_eq!(dependencies, expected.iter().map(|s| s.to_string()).collect());
    let violations = crate_graph_violations(&package, &dependencies);
    assert_eq!(violations.len(), 4, "{violations:#?}");
    assert!(violations[0].starts_with("presence-runtime -> presence-cluster:"), "{}", violations[0]);
    let engine = crate_graph_violations("presence-engine", &dependencies);
    assert!(engine.iter().all(|v| v.contains("no other presence crate")) && engine.len() == 5, "{engine:#?}");
    assert!(crate_graph_violations("presence-cli", &dependencies).is_empty());
    assert_eq!(crate_graph_violations("presence-new", &BTreeSet::new()).len(), 1);
    let members =
        workspace_members("[workspace]\nmembers = [\n    \"engine\", # core\n    \"runtime\",\n]\n");
    assert_eq!(members, ["engine", "runtime"]);
}
