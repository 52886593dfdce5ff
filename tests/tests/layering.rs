//! Module layering: no crate of the workspace has modules that import each other, and the
//! pipelines' folders depend one way, from the command line down to the runtime.
//!
//! The module graph is read from the source text, not from the compiler: a module is a `.rs`
//! file, found by following `mod name;` declarations from each crate root (`lib.rs`,
//! `main.rs`, `bin/*.rs`). An edge is any path in code that reaches another module: `crate::…`,
//! `super::…`, `self::…`, a path through a child module or a module imported with `use`, and
//! every branch of a `use` group. Comments, string literals and `#[cfg(test)]` items are left
//! out. A path resolves to the longest existing module prefix; when that module is a `lib.rs`
//! or `mod.rs` that only re-exports the item (`pub use child::Item`), it resolves on to the
//! module that defines the item, so importing through a re-export is an edge to the definer.
//! Re-exports themselves are not edges of the re-exporting file; its own uses are, and so are
//! a parent's uses of its children's items, while a bare `mod child;` declaration is not.
//!
//! A cycle is a strongly connected set of modules, reported with the shortest loop through it
//! and every edge inside it, each with the file line that makes it. A folder is also checked
//! taken whole: a module outside it that uses one of its files while another of its files
//! uses the module is a cycle too, though no two files form one.
//!
//! The pipelines' top folders are layers as well (`PIPELINE_LAYERS`); the check maps the
//! folders that exist, so that it runs while the move into folders is under way.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The workspace's crates, by the folder that holds their sources (`tests/fuzz` builds apart).
const CRATES: [(&str, &str); 6] = [
    ("operators", "operators/src"),
    ("pipelines", "pipelines/src"),
    ("sql", "sql/src"),
    ("datasets", "datasets/src"),
    ("benches", "benches/src"),
    ("tests", "tests/src"),
];

/// The pipelines' layers, top first: a module may import from its own layer's folder or from
/// a layer below it, never from one above. `sources` and `sinks` are one layer whose two
/// folders do not import each other.
const PIPELINE_LAYERS: [&[&str]; 5] = [
    &["cli", "config"],
    &["jobs"],
    &["sources", "sinks"],
    &["connect"],
    &["runtime"],
];

/// The pair of folders in one layer that must not import each other.
const SEPARATE_FOLDERS: [&str; 2] = ["sources", "sinks"];

#[test]
fn operators_modules_have_no_cycles() {
    assert_no_cycles("operators");
}

#[test]
fn pipelines_modules_have_no_cycles() {
    assert_no_cycles("pipelines");
}

#[test]
fn sql_modules_have_no_cycles() {
    assert_no_cycles("sql");
}

#[test]
fn datasets_modules_have_no_cycles() {
    assert_no_cycles("datasets");
}

#[test]
fn benches_modules_have_no_cycles() {
    assert_no_cycles("benches");
}

#[test]
fn tests_modules_have_no_cycles() {
    assert_no_cycles("tests");
}

#[test]
fn pipelines_layers_depend_downwards() {
    let src = workspace().join("pipelines/src");
    let graphs = load_crate("pipelines");
    // Only the folders that exist are layers: the restructure into folders may be under way.
    let layer_of: BTreeMap<&str, usize> = PIPELINE_LAYERS
        .iter()
        .enumerate()
        .flat_map(|(layer, folders)| folders.iter().map(move |f| (*f, layer)))
        .filter(|(folder, _)| src.join(folder).is_dir())
        .collect();
    let violations: Vec<String> = graphs
        .iter()
        .flat_map(|graph| layer_violations(graph, &layer_of))
        .collect();
    assert!(
        violations.is_empty(),
        "pipelines/src imports against its layers (cli, config → jobs → sources | sinks → \
         connect → runtime; folders mapped: {}):\n{}",
        layer_of.keys().copied().collect::<Vec<_>>().join(", "),
        violations.join("\n")
    );
}

/// The workspace root: this package's parent.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits inside the workspace")
        .to_path_buf()
}

/// The module graphs of a crate, one per crate root.
fn load_crate(name: &str) -> Vec<Graph> {
    let (_, dir) = CRATES
        .iter()
        .find(|(crate_name, _)| *crate_name == name)
        .expect("a crate of the workspace");
    let root = workspace();
    let sources = read_sources(&root, &root.join(dir));
    let graphs = crate_roots(&sources, Path::new(dir))
        .into_iter()
        .map(|file| Graph::build(&sources, &file))
        .collect::<Vec<_>>();
    assert!(!graphs.is_empty(), "no crate root found under {dir}");
    graphs
}

fn assert_no_cycles(name: &str) {
    let report: String = load_crate(name)
        .iter()
        .map(|graph| graph.cycle_report() + &graph.folder_cycle_report())
        .collect();
    assert!(
        report.is_empty(),
        "modules of {name} import each other; move what they share so that imports run one \
         way:\n{report}"
    );
}

/// Every `.rs` file below `dir`, by its path relative to the workspace root.
fn read_sources(root: &Path, dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                files.insert(relative, text);
            }
        }
    }
    files
}

/// The crate roots among `sources` below `src`: `lib.rs`, `main.rs`, `bin/*.rs`, `bin/*/main.rs`.
fn crate_roots(sources: &BTreeMap<PathBuf, String>, src: &Path) -> Vec<PathBuf> {
    sources
        .keys()
        .filter(|file| {
            let Ok(relative) = file.strip_prefix(src) else {
                return false;
            };
            let parts: Vec<&str> = relative.iter().filter_map(|p| p.to_str()).collect();
            matches!(
                parts.as_slice(),
                ["lib.rs"] | ["main.rs"] | ["bin", _] | ["bin", _, "main.rs"]
            )
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tokens.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

impl Token {
    fn is_ident(&self, word: &str) -> bool {
        matches!(&self.tok, Tok::Ident(w) if w == word)
    }

    fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }

    fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Ident(w) => Some(w),
            _ => None,
        }
    }
}

/// Splits Rust source into identifiers, `::` and punctuation, leaving out comments, string,
/// byte and character literals, lifetimes and numbers.
fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some(end) = raw_string_end(&chars, i) {
            line += chars[i..end].iter().filter(|c| **c == '\n').count();
            i = end;
        } else if c == '"' || ((c == 'b' || c == 'c') && at(i + 1) == '"') {
            i += if c == '"' { 1 } else { 2 };
            while i < chars.len() && chars[i] != '"' {
                // An escaped character may be a newline: a string continued on the next line.
                let step = if chars[i] == '\\' { 2 } else { 1 };
                line += chars[i..(i + step).min(chars.len())]
                    .iter()
                    .filter(|c| **c == '\n')
                    .count();
                i += step;
            }
            i += 1;
        } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
            let quote = if c == 'b' { i + 1 } else { i };
            if at(quote + 1) == '\\' {
                // An escaped character: up to the closing quote.
                i = quote + 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(quote + 2) == '\'' {
                i = quote + 3;
            } else {
                // A lifetime or label: the quote goes, the name is read as an identifier.
                i = quote + 1;
            }
        } else if c == 'r' && at(i + 1) == '#' && is_ident_start(at(i + 2)) {
            i += 2;
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_continue(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(Token {
                tok: Tok::Ident(word),
                line,
            });
        } else if c.is_ascii_digit() {
            while i < chars.len() && is_ident_continue(chars[i]) {
                i += 1;
            }
        } else if c == ':' && at(i + 1) == ':' {
            tokens.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        }
    }
    tokens
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where a raw string literal (`r"…"`, `r#"…"#`, `br#"…"#`, `cr"…"`) starting at `i` ends.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(chars.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    // Not the end of an identifier such as `for` or `bar`.
    if i > 0 && is_ident_continue(chars[i - 1]) {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|c| **c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && chars[j + 1..].iter().take_while(|c| **c == '#').count() >= hashes {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

/// `tokens` without `#[cfg(test)]` items (and without the whole file when it opens with
/// `#![cfg(test)]`).
fn without_test_items(tokens: Vec<Token>) -> Vec<Token> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let inner = tokens[i].is_punct('#') && tokens.get(i + 1).is_some_and(|t| t.is_punct('!'));
        let open = if inner { i + 2 } else { i + 1 };
        if tokens[i].is_punct('#') && tokens.get(open).is_some_and(|t| t.is_punct('[')) {
            let close = matching(&tokens, open);
            if is_cfg_test(&tokens[open + 1..close]) {
                if inner {
                    return Vec::new();
                }
                i = item_end(&tokens, close + 1);
                continue;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    out
}

/// Whether an attribute's tokens are `cfg(…test…)` without a `not`.
fn is_cfg_test(attribute: &[Token]) -> bool {
    attribute.first().is_some_and(|t| t.is_ident("cfg"))
        && attribute.iter().any(|t| t.is_ident("test"))
        && !attribute.iter().any(|t| t.is_ident("not"))
}

/// The index of the bracket that closes the one at `open`.
fn matching(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (j, token) in tokens.iter().enumerate().skip(open) {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    tokens.len().saturating_sub(1)
}

/// One past the end of the item that starts at `start` (after its attributes): its `;`, or
/// the block that ends it.
fn item_end(tokens: &[Token], start: usize) -> usize {
    let mut j = start;
    while j < tokens.len() {
        match tokens[j].tok {
            Tok::Punct('#') => {
                let open = j + 1;
                j = if tokens.get(open).is_some_and(|t| t.is_punct('[')) {
                    matching(tokens, open) + 1
                } else {
                    j + 1
                };
            }
            Tok::Punct(';') => return j + 1,
            Tok::Punct('{') => return matching(tokens, j) + 1,
            Tok::Punct('(' | '[') => j = matching(tokens, j) + 1,
            _ => j += 1,
        }
    }
    tokens.len()
}

// ---------------------------------------------------------------------------------------------
// Paths.

/// A path as written, with its `use` group branches spelled out.
#[derive(Clone, Debug)]
struct Written {
    segments: Vec<String>,
    /// The name it is imported as (`use a::b as c`), for `use` paths.
    alias: Option<String>,
    /// `use a::*`.
    glob: bool,
    line: usize,
}

/// What one statement or expression of a file refers to.
#[derive(Clone, Debug)]
struct Reference {
    paths: Vec<Written>,
    /// Inside a `use` declaration, and whether that declaration is `pub` (any visibility).
    in_use: Option<bool>,
    /// The inline modules (`mod name { … }`) the reference sits in.
    inline: Vec<String>,
}

/// A file's tokens read into the module declarations, item names and path references it holds.
#[derive(Debug, Default)]
struct Parsed {
    /// `mod name;`: child modules in files.
    file_children: Vec<String>,
    /// `mod name { … }`: child modules inline.
    inline_children: BTreeSet<String>,
    /// The names of its top-level items.
    defines: BTreeSet<String>,
    references: Vec<Reference>,
    /// Identifiers used outside `use` declarations (not as methods or fields), for finding
    /// what a file uses of the names a re-exporting module or a glob import brings in.
    body_idents: BTreeSet<String>,
}

const ITEM_KEYWORDS: [&str; 10] = [
    "fn",
    "struct",
    "enum",
    "trait",
    "type",
    "const",
    "static",
    "union",
    "mod",
    "macro_rules",
];

fn parse(text: &str) -> Parsed {
    let tokens = without_test_items(tokenize(text));
    let mut parsed = Parsed::default();
    // (inline module name, the brace depth its block opened at)
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut use_from: Option<(usize, bool)> = None;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let previous = i.checked_sub(1).map(|p| &tokens[p]);
        match &token.tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Punct(';') if use_from.is_some_and(|(d, _)| d == depth) => use_from = None,
            Tok::Ident(word)
                if word == "use" && !previous.is_some_and(|p| p.tok == Tok::PathSep) =>
            {
                use_from = Some((depth, is_pub_before(&tokens, i)));
            }
            Tok::Ident(word)
                if word == "mod" && tokens.get(i + 1).and_then(Token::ident).is_some() =>
            {
                let name = tokens[i + 1].ident().unwrap_or_default().to_owned();
                match tokens.get(i + 2).map(|t| &t.tok) {
                    Some(Tok::Punct(';')) if inline.is_empty() => {
                        parsed.file_children.push(name.clone())
                    }
                    Some(Tok::Punct('{')) => {
                        if inline.is_empty() {
                            parsed.inline_children.insert(name.clone());
                        }
                        inline.push((name.clone(), depth));
                    }
                    _ => {}
                }
                if depth == 0 {
                    parsed.defines.insert(name);
                }
                i += 2;
                continue;
            }
            Tok::Ident(word)
                if depth == 0
                    && inline.is_empty()
                    && ITEM_KEYWORDS.contains(&word.as_str())
                    && !previous.is_some_and(|p| p.tok == Tok::PathSep) =>
            {
                let name_at = if word == "macro_rules" { i + 2 } else { i + 1 };
                if let Some(name) = tokens.get(name_at).and_then(Token::ident) {
                    parsed.defines.insert(name.to_owned());
                }
            }
            Tok::Ident(_)
                if tokens.get(i + 1).is_some_and(|t| t.tok == Tok::PathSep)
                    && !previous.is_some_and(|p| p.tok == Tok::PathSep) =>
            {
                if let Some(first) = token
                    .ident()
                    .filter(|w| !matches!(*w, "crate" | "super" | "self"))
                {
                    parsed.body_idents.insert(first.to_owned());
                }
                let (paths, end) = read_path(&tokens, i, Vec::new());
                parsed.references.push(Reference {
                    paths,
                    in_use: use_from.map(|(_, public)| public),
                    inline: inline.iter().map(|(name, _)| name.clone()).collect(),
                });
                i = end;
                continue;
            }
            // `use name;` or `use name as alias;`: a path of one segment.
            Tok::Ident(word)
                if use_from.is_some() && previous.is_some_and(|p| p.is_ident("use")) =>
            {
                parsed.references.push(Reference {
                    paths: vec![Written {
                        segments: vec![word.clone()],
                        alias: alias_after(&tokens, i + 1),
                        glob: false,
                        line: token.line,
                    }],
                    in_use: use_from.map(|(_, public)| public),
                    inline: inline.iter().map(|(name, _)| name.clone()).collect(),
                });
            }
            // The rest of a `use` declaration: `as`, aliases.
            Tok::Ident(_) if use_from.is_some() => {}
            // Not a method or field, nor a later segment of a path.
            Tok::Ident(word)
                if !previous.is_some_and(|p| p.is_punct('.') || p.tok == Tok::PathSep) =>
            {
                parsed.body_idents.insert(word.clone());
            }
            _ => {}
        }
        i += 1;
    }
    parsed
}

/// Whether the `use` at `i` is preceded by a visibility (`pub`, `pub(crate)`, `pub(super)`).
fn is_pub_before(tokens: &[Token], i: usize) -> bool {
    let Some(mut j) = i.checked_sub(1) else {
        return false;
    };
    if tokens[j].is_punct(')') {
        while j > 0 && !tokens[j].is_punct('(') {
            j -= 1;
        }
        let Some(before) = j.checked_sub(1) else {
            return false;
        };
        j = before;
    }
    tokens[j].is_ident("pub")
}

/// `as name` at `i`, if there.
fn alias_after(tokens: &[Token], i: usize) -> Option<String> {
    if tokens.get(i).is_some_and(|t| t.is_ident("as")) {
        tokens.get(i + 1).and_then(Token::ident).map(str::to_owned)
    } else {
        None
    }
}

/// Reads the path starting at `i` after the segments of `prefix`, with every branch of its
/// `use` groups; returns the paths and the index after them.
fn read_path(tokens: &[Token], mut i: usize, mut prefix: Vec<String>) -> (Vec<Written>, usize) {
    let line = tokens.get(i).map_or(0, |t| t.line);
    loop {
        match tokens.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(word)) => {
                prefix.push(word.clone());
                i += 1;
            }
            Some(Tok::Punct('*')) => {
                return (
                    vec![Written {
                        segments: prefix,
                        alias: None,
                        glob: true,
                        line,
                    }],
                    i + 1,
                );
            }
            Some(Tok::Punct('{')) => {
                let close = matching(tokens, i);
                let mut paths = Vec::new();
                let mut j = i + 1;
                while j < close {
                    if tokens[j].is_punct(',') {
                        j += 1;
                        continue;
                    }
                    let (mut branch, end) = read_path(tokens, j, prefix.clone());
                    for path in &mut branch {
                        // `{self}` names the module itself.
                        if path.segments.last().is_some_and(|s| s == "self") {
                            path.segments.pop();
                        }
                    }
                    paths.extend(branch);
                    j = end.max(j + 1);
                    while j < close && !tokens[j].is_punct(',') {
                        j += 1;
                    }
                }
                return (paths, close + 1);
            }
            // `f::<T>`, or a `use` group's stray token: the path ends here.
            _ => {
                let paths = if prefix.is_empty() {
                    Vec::new()
                } else {
                    vec![Written {
                        segments: prefix,
                        alias: None,
                        glob: false,
                        line,
                    }]
                };
                return (paths, i);
            }
        }
        if tokens.get(i).is_some_and(|t| t.tok == Tok::PathSep) {
            i += 1;
            continue;
        }
        let alias = alias_after(tokens, i);
        let end = if alias.is_some() { i + 2 } else { i };
        return (
            vec![Written {
                segments: prefix,
                alias,
                glob: false,
                line,
            }],
            end,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The module graph.

/// A module's path from the crate root (`[]` is the root).
type ModPath = Vec<String>;

fn display(path: &ModPath) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

#[derive(Debug)]
struct Module {
    file: PathBuf,
    parsed: Parsed,
    /// A `lib.rs`, `main.rs` or `mod.rs`: its `pub use` declarations re-export, and are not
    /// edges of their own.
    reexporter: bool,
}

/// Why an edge is there: the first reference that makes it.
#[derive(Clone, Debug)]
struct Evidence {
    line: usize,
    path: String,
}

#[derive(Debug, Default)]
struct Graph {
    modules: BTreeMap<ModPath, Module>,
    edges: BTreeMap<ModPath, BTreeMap<ModPath, Evidence>>,
}

impl Graph {
    /// The modules reachable from the crate root `root` through `mod` declarations, and the
    /// edges between them.
    fn build(sources: &BTreeMap<PathBuf, String>, root: &Path) -> Graph {
        let mut graph = Graph::default();
        let mut pending = vec![(ModPath::new(), root.to_path_buf(), true)];
        while let Some((path, file, is_root)) = pending.pop() {
            let Some(text) = sources.get(&file) else {
                continue;
            };
            let parsed = parse(text);
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let own_dir = is_root || name == "mod.rs";
            let dir = if own_dir {
                file.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                file.with_extension("")
            };
            for child in &parsed.file_children {
                let flat = dir.join(format!("{child}.rs"));
                let nested = dir.join(child).join("mod.rs");
                let found = [flat, nested].into_iter().find(|f| sources.contains_key(f));
                if let Some(found) = found {
                    let mut child_path = path.clone();
                    child_path.push(child.clone());
                    pending.push((child_path, found, false));
                }
            }
            graph.modules.insert(
                path,
                Module {
                    file,
                    parsed,
                    reexporter: own_dir,
                },
            );
        }
        graph.add_edges();
        graph
    }

    fn add_edges(&mut self) {
        let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, Evidence>> = BTreeMap::new();
        for (from, module) in &self.modules {
            let aliases = self.aliases(from, module);
            let mut add = |to: ModPath, evidence: Evidence| {
                if &to != from {
                    edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert(evidence);
                }
            };
            for reference in &module.parsed.references {
                // A re-exporting file's `pub use` is its public face, not a dependency.
                if module.reexporter && reference.in_use == Some(true) {
                    continue;
                }
                for written in &reference.paths {
                    let Some(absolute) = self.absolute(from, module, reference, written, &aliases)
                    else {
                        continue;
                    };
                    let evidence = Evidence {
                        line: written.line,
                        path: written.segments.join("::") + if written.glob { "::*" } else { "" },
                    };
                    let imported = self.modules.get(&absolute);
                    if reference.in_use.is_some() && imported.is_some() && !written.glob {
                        // `use crate::a::b;` names a module: what the file uses through the
                        // name is the dependency, and is found where it is used.
                        continue;
                    }
                    if let (true, Some(glob)) = (written.glob, imported.filter(|m| m.reexporter)) {
                        // `use super::*` from a re-exporting module: an edge to each module
                        // whose items the file uses, the glob's own or those it re-exports.
                        for name in &module.parsed.body_idents {
                            let mut named = absolute.clone();
                            named.push(name.clone());
                            let to = if self.modules.contains_key(&named) {
                                Some(named)
                            } else if glob.parsed.defines.contains(name) {
                                Some(absolute.clone())
                            } else {
                                self.reexports(&absolute, glob)
                                    .get(name)
                                    .and_then(|target| self.resolve(target, 0))
                            };
                            if let Some(to) = to {
                                add(to, evidence.clone());
                            }
                        }
                        continue;
                    }
                    if let Some(to) = self.resolve(&absolute, 0) {
                        add(to, evidence);
                    }
                }
            }
            // A re-exporting file that uses, in its own code, a name it re-exports depends on
            // the module that defines it.
            if module.reexporter {
                for (name, target) in self.reexports(from, module) {
                    if module.parsed.body_idents.contains(&name)
                        && let Some(to) = self.resolve(&target, 0)
                    {
                        add(
                            to,
                            Evidence {
                                line: 0,
                                path: format!("{name} (re-exported, used here)"),
                            },
                        );
                    }
                }
            }
        }
        self.edges = edges;
    }

    /// The modules a file imports by name (`use crate::a::b;`, `use super::{self as p}`).
    fn aliases(&self, from: &ModPath, module: &Module) -> BTreeMap<String, ModPath> {
        let mut aliases = BTreeMap::new();
        for reference in &module.parsed.references {
            if reference.in_use.is_none() {
                continue;
            }
            for written in &reference.paths {
                if written.glob {
                    continue;
                }
                let Some(absolute) =
                    self.absolute(from, module, reference, written, &BTreeMap::new())
                else {
                    continue;
                };
                if self.modules.contains_key(&absolute) {
                    let name = written
                        .alias
                        .clone()
                        .or_else(|| written.segments.last().cloned());
                    if let Some(name) = name.filter(|n| n != "super" && n != "crate") {
                        aliases.insert(name, absolute);
                    }
                }
            }
        }
        aliases
    }

    /// A written path as a path from the crate root, when it reaches into this crate.
    fn absolute(
        &self,
        from: &ModPath,
        module: &Module,
        reference: &Reference,
        written: &Written,
        aliases: &BTreeMap<String, ModPath>,
    ) -> Option<ModPath> {
        let mut here = from.clone();
        here.extend(reference.inline.iter().cloned());
        let segments = &written.segments;
        let first = segments.first()?;
        let (mut base, rest) = match first.as_str() {
            "crate" => (ModPath::new(), &segments[1..]),
            "self" => (here, &segments[1..]),
            "super" => {
                let supers = segments.iter().take_while(|s| *s == "super").count();
                for _ in 0..supers {
                    here.pop()?;
                }
                (here, &segments[supers..])
            }
            name if reference.inline.is_empty()
                && (module.parsed.file_children.iter().any(|c| c == name)
                    || module.parsed.inline_children.contains(name)) =>
            {
                (here, &segments[..])
            }
            name => (aliases.get(name)?.clone(), &segments[1..]),
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The module a path from the crate root reaches: the longest existing module prefix,
    /// followed on through re-exports to the module that defines the item. `None` when the
    /// item comes through a glob re-export that cannot be traced.
    fn resolve(&self, path: &ModPath, hops: usize) -> Option<ModPath> {
        let known = (0..=path.len())
            .rev()
            .find(|&k| self.modules.contains_key(&path[..k]))?;
        let prefix = path[..known].to_vec();
        let Some(name) = path.get(known) else {
            return Some(prefix);
        };
        let module = &self.modules[&prefix];
        if hops > 16 || !module.reexporter || module.parsed.defines.contains(name) {
            return Some(prefix);
        }
        let reexports = self.reexports(&prefix, module);
        if let Some(target) = reexports.get(name) {
            let mut target = target.clone();
            target.extend(path[known + 1..].iter().cloned());
            return self.resolve(&target, hops + 1);
        }
        let mut globbed = false;
        for source in self.glob_reexports(&prefix, module) {
            globbed = true;
            let mut target = source.clone();
            target.push(name.clone());
            if let Some(found) = self.resolve(&target, hops + 1)
                && found != source
            {
                return Some(found);
            }
            if self
                .modules
                .get(&source)
                .is_some_and(|m| m.parsed.defines.contains(name))
            {
                return Some(source);
            }
        }
        if globbed { None } else { Some(prefix) }
    }

    /// A re-exporting module's `pub use` names, each with the path it re-exports.
    fn reexports(&self, from: &ModPath, module: &Module) -> BTreeMap<String, ModPath> {
        let mut names = BTreeMap::new();
        for reference in &module.parsed.references {
            if reference.in_use != Some(true) {
                continue;
            }
            for written in reference.paths.iter().filter(|w| !w.glob) {
                let name = written
                    .alias
                    .clone()
                    .or_else(|| written.segments.last().cloned());
                let absolute = self.absolute(from, module, reference, written, &BTreeMap::new());
                if let (Some(name), Some(absolute)) = (name, absolute) {
                    names.insert(name, absolute);
                }
            }
        }
        names
    }

    /// The modules a re-exporting module re-exports everything of (`pub use a::*`).
    fn glob_reexports(&self, from: &ModPath, module: &Module) -> Vec<ModPath> {
        module
            .parsed
            .references
            .iter()
            .filter(|r| r.in_use == Some(true))
            .flat_map(|r| r.paths.iter().filter(|w| w.glob).map(move |w| (r, w)))
            .filter_map(|(r, w)| self.absolute(from, module, r, w, &BTreeMap::new()))
            .filter(|p| self.modules.contains_key(p))
            .collect()
    }

    /// The strongly connected sets of more than one module (Tarjan's algorithm).
    fn cycles(&self) -> Vec<Vec<ModPath>> {
        struct State<'g> {
            graph: &'g Graph,
            index: BTreeMap<&'g ModPath, usize>,
            low: BTreeMap<&'g ModPath, usize>,
            stack: Vec<&'g ModPath>,
            on_stack: BTreeSet<&'g ModPath>,
            found: Vec<Vec<ModPath>>,
        }
        fn visit<'g>(s: &mut State<'g>, node: &'g ModPath) {
            let n = s.index.len();
            s.index.insert(node, n);
            s.low.insert(node, n);
            s.stack.push(node);
            s.on_stack.insert(node);
            for next in s.graph.edges.get(node).into_iter().flat_map(BTreeMap::keys) {
                if !s.index.contains_key(next) {
                    visit(s, next);
                    let low = s.low[node].min(s.low[next]);
                    s.low.insert(node, low);
                } else if s.on_stack.contains(next) {
                    let low = s.low[node].min(s.index[next]);
                    s.low.insert(node, low);
                }
            }
            if s.low[node] == s.index[node] {
                let mut members = Vec::new();
                while let Some(top) = s.stack.pop() {
                    s.on_stack.remove(top);
                    members.push(top.clone());
                    if top == node {
                        break;
                    }
                }
                if members.len() > 1 {
                    members.sort();
                    s.found.push(members);
                }
            }
        }
        let mut state = State {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            found: Vec::new(),
        };
        for node in self.modules.keys() {
            if !state.index.contains_key(node) {
                visit(&mut state, node);
            }
        }
        state.found.sort();
        state.found
    }

    /// The shortest loop from `start` back to itself within `members`.
    fn shortest_loop(&self, start: &ModPath, members: &BTreeSet<&ModPath>) -> Vec<ModPath> {
        let mut came_from: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for next in self.edges.get(node).into_iter().flat_map(BTreeMap::keys) {
                if !members.contains(next) {
                    continue;
                }
                if next == start {
                    let mut between = Vec::new();
                    let mut at = node;
                    while at != start {
                        between.push(at.clone());
                        at = came_from[at];
                    }
                    between.reverse();
                    let mut path = vec![start.clone()];
                    path.extend(between);
                    path.push(start.clone());
                    return path;
                }
                if !came_from.contains_key(next) && next != start {
                    came_from.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        vec![start.clone()]
    }

    fn describe_edge(&self, from: &ModPath, to: &ModPath) -> String {
        let evidence = &self.edges[from][to];
        let file = self.modules[from].file.display();
        let place = if evidence.line == 0 {
            file.to_string()
        } else {
            format!("{file}:{}", evidence.line)
        };
        format!(
            "{} → {} ({place}: `{}`)",
            display(from),
            display(to),
            evidence.path
        )
    }

    /// Every cycle, as text: empty when there is none.
    fn cycle_report(&self) -> String {
        let mut out = String::new();
        for members in self.cycles() {
            let set: BTreeSet<&ModPath> = members.iter().collect();
            let shortest = self.shortest_loop(&members[0], &set);
            let loop_text: Vec<String> = shortest.iter().map(display).collect();
            let _ = writeln!(out, "  cycle: {}", loop_text.join(" → "));
            let files: Vec<String> = members
                .iter()
                .map(|m| format!("{} ({})", display(m), self.modules[m].file.display()))
                .collect();
            let _ = writeln!(out, "    modules: {}", files.join(", "));
            for from in &members {
                for to in self.edges.get(from).into_iter().flat_map(BTreeMap::keys) {
                    if set.contains(to) {
                        let _ = writeln!(out, "    {}", self.describe_edge(from, to));
                    }
                }
            }
        }
        out
    }

    /// Cycles between a folder (a module with submodules, taken whole) and modules outside
    /// it, that no cycle between single modules explains: `a::x → b` with `b → a::y` makes
    /// `a` and `b` depend on each other though no two files do. As text: empty when none.
    fn folder_cycle_report(&self) -> String {
        let within = |folder: &ModPath, m: &ModPath| m.starts_with(folder);
        let file_cycles = self.cycles();
        let same_file_cycle =
            |a: &ModPath, b: &ModPath| file_cycles.iter().any(|c| c.contains(a) && c.contains(b));
        let folders: Vec<&ModPath> = self
            .modules
            .keys()
            .filter(|f| !f.is_empty())
            .filter(|f| {
                self.modules
                    .keys()
                    .any(|m| m.len() > f.len() && within(f, m))
            })
            .collect();
        let mut reports: Vec<(&ModPath, BTreeSet<ModPath>)> = Vec::new();
        for folder in folders {
            let node = |m: &ModPath| {
                if within(folder, m) {
                    folder.clone()
                } else {
                    m.clone()
                }
            };
            let mut forward: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
            let mut backward: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
            for (from, targets) in &self.edges {
                for to in targets.keys() {
                    let (a, b) = (node(from), node(to));
                    if a != b {
                        forward.entry(a.clone()).or_default().insert(b.clone());
                        backward.entry(b).or_default().insert(a);
                    }
                }
            }
            let reach = |edges: &BTreeMap<ModPath, BTreeSet<ModPath>>| {
                let mut seen = BTreeSet::new();
                let mut queue = vec![folder.clone()];
                while let Some(at) = queue.pop() {
                    for next in edges.get(&at).into_iter().flatten() {
                        if seen.insert(next.clone()) {
                            queue.push(next.clone());
                        }
                    }
                }
                seen
            };
            let outside: BTreeSet<ModPath> = reach(&forward)
                .intersection(&reach(&backward))
                .filter(|m| *m != folder)
                .cloned()
                .collect();
            let explained = outside.iter().all(|o| {
                self.modules
                    .keys()
                    .any(|m| within(folder, m) && same_file_cycle(m, o))
            });
            if !outside.is_empty() && !explained {
                reports.push((folder, outside));
            }
        }
        // A cycle through a folder is also one through each folder around it: report the
        // innermost.
        let innermost: Vec<&(&ModPath, BTreeSet<ModPath>)> = reports
            .iter()
            .filter(|(folder, outside)| {
                !reports.iter().any(|(inner, inner_outside)| {
                    inner.len() > folder.len() && within(folder, inner) && inner_outside == outside
                })
            })
            .collect();
        let mut out = String::new();
        for (folder, outside) in innermost {
            let names: Vec<String> = outside.iter().map(display).collect();
            let _ = writeln!(
                out,
                "  folder cycle: {}/ (taken whole) ↔ {}",
                display(folder),
                names.join(", ")
            );
            // The edges into and out of the folder; those among the modules outside it are
            // in their own files.
            let involved = |m: &ModPath| within(folder, m) || outside.contains(m);
            for (from, targets) in &self.edges {
                for to in targets.keys() {
                    let crosses = within(folder, from) != within(folder, to);
                    if involved(from) && involved(to) && crosses {
                        let _ = writeln!(out, "    {}", self.describe_edge(from, to));
                    }
                }
            }
        }
        out
    }
}

/// The imports of `graph` that go up the layers, or across between `sources` and `sinks`.
fn layer_violations(graph: &Graph, layer_of: &BTreeMap<&str, usize>) -> Vec<String> {
    let folder = |path: &ModPath| {
        path.first()
            .and_then(|f| layer_of.get_key_value(f.as_str()))
            .map(|(f, layer)| (*f, *layer))
    };
    let mut violations = Vec::new();
    for (from, targets) in &graph.edges {
        let Some((from_folder, from_layer)) = folder(from) else {
            continue;
        };
        for to in targets.keys() {
            let Some((to_folder, to_layer)) = folder(to) else {
                continue;
            };
            let across = from_folder != to_folder
                && SEPARATE_FOLDERS.contains(&from_folder)
                && SEPARATE_FOLDERS.contains(&to_folder);
            if to_layer < from_layer || across {
                violations.push(format!("  {}", graph.describe_edge(from, to)));
            }
        }
    }
    violations
}

// ---------------------------------------------------------------------------------------------
// The reader itself, on small crates written here.

/// A graph from `(file, text)` pairs, rooted at `src/lib.rs`.
fn graph_of(files: &[(&str, &str)]) -> Graph {
    let sources = files
        .iter()
        .map(|(file, text)| (PathBuf::from(file), (*text).to_owned()))
        .collect();
    Graph::build(&sources, Path::new("src/lib.rs"))
}

fn edges_of(graph: &Graph) -> Vec<String> {
    graph
        .edges
        .iter()
        .flat_map(|(from, to)| {
            to.keys()
                .map(move |to| format!("{} → {}", display(from), display(to)))
        })
        .collect()
}

#[test]
fn the_reader_finds_a_cycle_between_siblings() {
    let graph = graph_of(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "use crate::b::Thing;\npub struct Other;\n"),
        (
            "src/b.rs",
            "pub struct Thing;\nfn f() -> super::a::Other { todo!() }\n",
        ),
    ]);
    assert_eq!(edges_of(&graph), ["a → b", "b → a"]);
    let report = graph.cycle_report();
    assert!(report.contains("cycle: a → b → a"), "{report}");
    assert!(report.contains("src/a.rs:1: `crate::b::Thing`"), "{report}");

    // Line numbers count the lines of strings continued with `\`, raw strings and comments.
    let graph = graph_of(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "const S: &str = \"one \\\n two\";\nconst R: &str = r#\"\n\"#;\n/* \n */\nuse crate::b::X;\n",
        ),
        ("src/b.rs", "pub struct X;\n"),
    ]);
    assert_eq!(
        graph.edges[&vec!["a".to_owned()]][&vec!["b".to_owned()]].line,
        7
    );
}

#[test]
fn the_reader_skips_comments_strings_and_test_items() {
    let graph = graph_of(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "//! See [`crate::b::Thing`].\n\
             /* crate::b::X /* nested */ crate::b::Y */\n\
             const S: &str = \"crate::b::Thing\";\n\
             const R: &str = r#\"crate::b::\"Thing\"#;\n\
             const C: char = '\"';\n\
             fn f<'a>(x: &'a str) -> &'a str { x }\n\
             #[cfg(test)]\nmod tests {\n    use crate::b::Thing;\n}\n\
             #[cfg(test)]\nuse crate::b::Other;\n",
        ),
        ("src/b.rs", "use crate::a::f;\npub struct Thing;\n"),
    ]);
    assert_eq!(edges_of(&graph), ["b → a"]);
    assert!(graph.cycle_report().is_empty());
}

#[test]
fn the_reader_spells_out_use_groups_and_follows_re_exports() {
    let graph = graph_of(&[
        (
            "src/lib.rs",
            "mod inner;\nmod user;\npub use inner::{Deep, deep::Deeper};\n",
        ),
        ("src/inner/mod.rs", "pub mod deep;\npub use deep::Deep;\n"),
        (
            "src/inner/deep.rs",
            "pub struct Deep;\npub struct Deeper;\n",
        ),
        (
            "src/user.rs",
            "use crate::{Deep, inner::{self as i}};\nfn f(_: i::Deep) {}\n",
        ),
    ]);
    // Through the root's and `inner`'s re-exports, to the module that defines the items.
    assert_eq!(edges_of(&graph), ["user → inner::deep"]);
}

#[test]
fn a_parent_that_uses_its_child_and_a_child_that_uses_its_parent_are_a_cycle() {
    let graph = graph_of(&[
        ("src/lib.rs", "pub mod sink;\n"),
        (
            "src/sink/mod.rs",
            "mod migrations;\npub struct Target;\npub fn run() { migrations::migrate(); }\n",
        ),
        (
            "src/sink/migrations.rs",
            "use super::Target;\npub fn migrate() {}\n",
        ),
    ]);
    assert_eq!(
        edges_of(&graph),
        ["sink → sink::migrations", "sink::migrations → sink"]
    );
    assert!(!graph.cycle_report().is_empty());

    // A bare `mod child;` and a `pub use` of the child are not edges of the parent.
    let graph = graph_of(&[
        ("src/lib.rs", "pub mod sink;\n"),
        (
            "src/sink/mod.rs",
            "mod migrations;\nmod target;\npub use migrations::migrate;\npub use target::Target;\n",
        ),
        ("src/sink/target.rs", "pub struct Target;\n"),
        (
            "src/sink/migrations.rs",
            "use super::Target;\npub fn migrate() {}\n",
        ),
    ]);
    assert_eq!(edges_of(&graph), ["sink::migrations → sink::target"]);
}

#[test]
fn layers_forbid_upward_imports_and_sources_to_sinks() {
    let graph = graph_of(&[
        (
            "src/lib.rs",
            "pub mod jobs;\npub mod runtime;\npub mod sinks;\npub mod sources;\nmod fuzz;\n",
        ),
        ("src/jobs/mod.rs", "use crate::runtime::Clock;\n"),
        (
            "src/runtime/mod.rs",
            "pub struct Clock;\nfn f() { crate::jobs::go(); }\n",
        ),
        ("src/sinks/mod.rs", "use crate::sources::Feed;\n"),
        ("src/sources/mod.rs", "pub struct Feed;\n"),
        ("src/fuzz.rs", "use crate::jobs::go;\n"),
    ]);
    let layer_of = BTreeMap::from([("jobs", 1), ("sources", 2), ("sinks", 2), ("runtime", 4)]);
    let violations = layer_violations(&graph, &layer_of);
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations[0].contains("runtime → jobs"), "{violations:?}");
    assert!(violations[1].contains("sinks → sources"), "{violations:?}");
}

#[test]
fn a_module_and_a_folder_that_depend_on_each_other_are_a_cycle() {
    // `migrations` uses a table of the `sink` folder, and the folder's runner uses
    // `migrations`: no two files form a loop, the folder and the module do.
    let graph = graph_of(&[
        ("src/lib.rs", "mod migrations;\npub mod sink;\n"),
        (
            "src/sink/mod.rs",
            "mod tables;\npub use tables::Table;\npub fn run() { crate::migrations::migrate(); }\n",
        ),
        ("src/sink/tables.rs", "pub struct Table;\n"),
        (
            "src/migrations.rs",
            "pub fn migrate() { let _ = crate::sink::Table; }\n",
        ),
    ]);
    assert_eq!(
        edges_of(&graph),
        ["migrations → sink::tables", "sink → migrations"]
    );
    assert!(graph.cycle_report().is_empty());
    let report = graph.folder_cycle_report();
    assert!(
        report.contains("folder cycle: sink/ (taken whole) ↔ migrations"),
        "{report}"
    );
}
