//! The docs check themselves: every command line in `README.md` and `docs/src/` that runs a
//! vigil binary names one the workspace builds and uses only flags that binary's `--help`
//! lists; every relative link points at a file (and a heading, when it names one); every
//! chapter is in the book's `SUMMARY.md`.
//!
//! Command lines are read from fenced code blocks tagged `sh`, `bash`, `shell` or `console`
//! (in a `console` block, only the lines after a `$ ` prompt). A block is split into simple
//! commands the way a shell would: quotes and `\` line continuations join lines, and `|`,
//! `;`, `&&`, `||` and new lines separate commands; a `#` starting a word begins a comment.
//! A command runs a vigil binary when its program (after any `NAME=value` assignments) is
//! `vigil-NAME` by any path (`target/release/vigil-sql`, `./target/debug/vigil-guard`),
//! `./run` (which runs `vigil-guard`), or `cargo … --bin vigil-NAME` (whose flags after `--`
//! are the binary's). Each long flag (`--foo`, `--foo=…`) and short flag (`-w`) before a bare
//! `--` must appear in the options of `NAME --help`, or of `NAME SUBCOMMAND --help` when the
//! first argument is one of the binary's subcommands (`vigil-bench guard`).
//!
//! The help comes from the binaries themselves, built first with `cargo build --bins
//! --workspace`, so the test tells the truth on a fresh clone and never trusts a copy of the
//! flags that could drift from the code.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Code-block tags whose lines are shell commands.
const SHELL_TAGS: [&str; 4] = ["sh", "bash", "shell", "console"];

/// Words that run the command after them, so the program is the next word.
const WRAPPERS: [&str; 5] = ["exec", "env", "time", "nohup", "nice"];

/// The fewest vigil invocations the docs hold; fewer means the parser lost them.
const MIN_INVOCATIONS: usize = 40;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// README.md and every Markdown file under docs/src, as (path relative to the root, text).
fn doc_files() -> Vec<(PathBuf, String)> {
    let root = workspace_root();
    let mut paths = vec![PathBuf::from("README.md")];
    let mut book = Vec::new();
    markdown_under(&root, Path::new("docs/src"), &mut book);
    book.sort();
    paths.extend(book);
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(root.join(&path))
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path, text)
        })
        .collect()
}

/// Appends the `.md` files under `dir` (relative to `root`), recursively.
fn markdown_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let name = entry.unwrap().file_name();
        let path = dir.join(&name);
        if root.join(&path).is_dir() {
            markdown_under(root, &path, out);
        } else if path.extension().is_some_and(|ext| ext == "md") {
            out.push(path);
        }
    }
}

/// A fenced code block: its tag (the first word of the info string) and its lines, each with
/// its 1-based line number in the file.
struct Block {
    tag: String,
    lines: Vec<(usize, String)>,
}

/// The fenced code blocks of a Markdown text (``` or ~~~ fences, closed by a fence of the same
/// character at least as long).
fn code_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(char, usize, Block)> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence = fence_of(trimmed);
        match (&mut open, fence) {
            (None, Some((ch, len))) => {
                let info = trimmed[len..].trim();
                let tag = info
                    .split(|c: char| c.is_whitespace() || c == ',' || c == '{')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                open = Some((
                    ch,
                    len,
                    Block {
                        tag,
                        lines: Vec::new(),
                    },
                ));
            }
            (Some((ch, len, _)), Some((close, close_len)))
                if close == *ch && close_len >= *len && trimmed[close_len..].trim().is_empty() =>
            {
                blocks.push(open.take().unwrap().2);
            }
            (Some((_, _, block)), _) => block.lines.push((index + 1, line.to_owned())),
            (None, None) => {}
        }
    }
    blocks
}

/// The fence a line opens or closes with, as its character and length.
fn fence_of(trimmed: &str) -> Option<(char, usize)> {
    let ch = trimmed.chars().next()?;
    if ch != '`' && ch != '~' {
        return None;
    }
    let len = trimmed.chars().take_while(|&c| c == ch).count();
    (len >= 3).then_some((ch, len))
}

/// One simple command of a shell block: its words, and the doc line it starts on.
#[derive(Debug)]
struct ShellCommand {
    line: usize,
    words: Vec<String>,
}

/// Splits a shell block into simple commands, as `sh` would read it (quotes, escapes, line
/// continuations, comments and command separators; no expansion).
fn shell_commands(block: &Block) -> Vec<ShellCommand> {
    let mut text = String::new();
    let mut line_of = Vec::new(); // the doc line of each char of `text`
    for (line, content) in &block.lines {
        let content = if block.tag == "console" {
            // Only what follows a prompt is a command; the rest is output.
            content.trim_start().strip_prefix("$ ").unwrap_or_default()
        } else {
            content.as_str()
        };
        for ch in content.chars().chain(std::iter::once('\n')) {
            text.push(ch);
            line_of.push(*line);
        }
    }

    let chars: Vec<char> = text.chars().collect();
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    let mut start_line = None;
    let mut i = 0;
    let end_word = |word: &mut Option<String>, words: &mut Vec<String>| {
        if let Some(w) = word.take() {
            words.push(w);
        }
    };
    let end_command =
        |words: &mut Vec<String>, start: &mut Option<usize>, out: &mut Vec<ShellCommand>| {
            if !words.is_empty() {
                out.push(ShellCommand {
                    line: start.unwrap_or(0),
                    words: std::mem::take(words),
                });
            }
            *start = None;
        };
    while i < chars.len() {
        let ch = chars[i];
        if word.is_none() && words.is_empty() && !ch.is_whitespace() && start_line.is_none() {
            start_line = Some(line_of[i]);
        }
        match ch {
            '\\' if chars.get(i + 1) == Some(&'\n') => i += 1, // a line continuation
            '\\' => {
                if let Some(&next) = chars.get(i + 1) {
                    word.get_or_insert_with(String::new).push(next);
                    i += 1;
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    w.push(chars[i]);
                    i += 1;
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    w.push(chars[i]);
                    i += 1;
                }
            }
            '#' if word.is_none() => {
                while i + 1 < chars.len() && chars[i + 1] != '\n' {
                    i += 1;
                }
            }
            '\n' | ';' | '|' | '&' => {
                end_word(&mut word, &mut words);
                end_command(&mut words, &mut start_line, &mut commands);
            }
            c if c.is_whitespace() => end_word(&mut word, &mut words),
            c => word.get_or_insert_with(String::new).push(c),
        }
        i += 1;
    }
    end_word(&mut word, &mut words);
    end_command(&mut words, &mut start_line, &mut commands);
    commands
}

/// A run of a vigil binary found in the docs.
#[derive(Debug)]
struct Invocation {
    file: PathBuf,
    line: usize,
    binary: String,
    args: Vec<String>,
}

/// A vigil binary's name and the arguments a command gives it.
type BinaryArgs = (String, Vec<String>);

/// The vigil binary a simple command runs, and its arguments; `None` when it runs none.
fn invocation(words: &[String]) -> Option<BinaryArgs> {
    let mut rest = words;
    while let Some(first) = rest.first() {
        let assignment = first.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
        });
        if assignment || WRAPPERS.contains(&first.as_str()) {
            rest = &rest[1..];
        } else {
            break;
        }
    }
    let (program, args) = rest.split_first()?;
    let name = program.rsplit('/').next().unwrap_or(program);
    if program == "./run" {
        return Some(("vigil-guard".to_owned(), args.to_vec()));
    }
    if name.starts_with("vigil-") {
        return Some((name.to_owned(), args.to_vec()));
    }
    if name == "cargo" {
        let binary = args.iter().enumerate().find_map(|(i, arg)| {
            if arg == "--bin" {
                args.get(i + 1).cloned()
            } else {
                arg.strip_prefix("--bin=").map(str::to_owned)
            }
        })?;
        if !binary.starts_with("vigil-") {
            return None;
        }
        // Cargo's own flags come before `--`; the binary's after it (`cargo build` has none).
        let own = match args.iter().position(|arg| arg == "--") {
            Some(dash) => args[dash + 1..].to_vec(),
            None => Vec::new(),
        };
        return Some((binary, own));
    }
    None
}

/// Every vigil invocation in the docs' shell blocks.
fn invocations(docs: &[(PathBuf, String)]) -> Vec<Invocation> {
    let mut found = Vec::new();
    for (file, text) in docs {
        for block in code_blocks(text) {
            if !SHELL_TAGS.contains(&block.tag.as_str()) {
                continue;
            }
            for command in shell_commands(&block) {
                if let Some((binary, args)) = invocation(&command.words) {
                    found.push(Invocation {
                        file: file.clone(),
                        line: command.line,
                        binary,
                        args,
                    });
                }
            }
        }
    }
    found
}

/// Builds every binary of the workspace and returns the directory they are in.
fn build_binaries(root: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "--bins", "-q", "--workspace"])
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("running cargo build: {e}"));
    assert!(
        built.status.success(),
        "cargo build --bins --workspace failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // Cargo knows where its target directory is (CARGO_TARGET_DIR, a config file, or
    // `target/`), so ask it rather than guess.
    let metadata = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("running cargo metadata: {e}"));
    assert!(
        metadata.status.success(),
        "cargo metadata failed:\n{}",
        String::from_utf8_lossy(&metadata.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let target = metadata["target_directory"].as_str().unwrap();
    PathBuf::from(target).join("debug")
}

/// What a binary's (or subcommand's) `--help` offers.
#[derive(Default)]
struct Help {
    /// Every option, long (`--archive`) and short (`-w`).
    flags: BTreeSet<String>,
    /// The subcommands listed under `Commands:`.
    subcommands: BTreeSet<String>,
}

/// Reads clap's help text: options are the lines that start with `-`, up to the two spaces
/// before their description; subcommands are the first words of the `Commands:` section.
fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut in_commands = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if line.trim_end().ends_with(':') && !line.starts_with(' ') {
            in_commands = line.trim_end() == "Commands:";
            continue;
        }
        if in_commands {
            if let Some(name) = trimmed.split_whitespace().next() {
                help.subcommands.insert(name.to_owned());
            }
            continue;
        }
        if !trimmed.starts_with('-') {
            continue;
        }
        let head = trimmed.split("  ").next().unwrap_or(trimmed);
        for part in head.split([',', ' ']) {
            let flag = part.split(['=', '<', '[']).next().unwrap_or("");
            if flag.len() > 1 && flag.starts_with('-') {
                help.flags.insert(flag.to_owned());
            }
        }
    }
    help
}

/// Runs `binary [subcommand] --help` and reads it.
fn help_of(bin_dir: &Path, binary: &str, subcommand: Option<&str>) -> Result<Help, String> {
    let mut command = Command::new(bin_dir.join(binary));
    command.args(subcommand).arg("--help");
    let output = command
        .output()
        .map_err(|e| format!("running {binary} --help: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{binary} {}--help` failed: {}",
            subcommand.map(|s| format!("{s} ")).unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(parse_help(&String::from_utf8_lossy(&output.stdout)))
}

/// The flags of an invocation's arguments: every word before a bare `--` that starts with `-`
/// and is not a number, its value (`--foo=…`) cut off.
fn flags_in(args: &[String]) -> Vec<&str> {
    args.iter()
        .take_while(|arg| *arg != "--")
        .filter_map(|arg| {
            let flag = arg.split('=').next().unwrap_or(arg);
            let is_long = flag.len() > 2 && flag.starts_with("--");
            let is_short = flag.len() == 2
                && flag.starts_with('-')
                && flag.chars().nth(1).is_some_and(|c| c.is_ascii_alphabetic());
            (is_long || is_short).then_some(flag)
        })
        .collect()
}

#[test]
fn every_command_line_in_the_docs_uses_real_binaries_and_flags() {
    let root = workspace_root();
    let docs = doc_files();
    let found = invocations(&docs);
    assert!(
        found.len() >= MIN_INVOCATIONS,
        "found only {} vigil command lines in the docs; is the block parser broken?",
        found.len()
    );

    let bin_dir = build_binaries(&root);
    let mut helps: BTreeMap<(String, Option<String>), Result<Help, String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for run in &found {
        let at = format!("{}:{}", run.file.display(), run.line);
        if !bin_dir.join(&run.binary).is_file() {
            problems.push(format!(
                "{at}: `{}` is not a binary the workspace builds (not in {})",
                run.binary,
                bin_dir.display()
            ));
            continue;
        }
        let top = helps
            .entry((run.binary.clone(), None))
            .or_insert_with(|| help_of(&bin_dir, &run.binary, None));
        let top = match top {
            Ok(help) => help,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        // `vigil-bench guard …`: the subcommand's own help lists its flags.
        let subcommand = run
            .args
            .first()
            .filter(|first| top.subcommands.contains(first.as_str()))
            .cloned();
        let (help, shown) = match &subcommand {
            None => (&*top, run.binary.clone()),
            Some(sub) => {
                let help = helps
                    .entry((run.binary.clone(), Some(sub.clone())))
                    .or_insert_with(|| help_of(&bin_dir, &run.binary, Some(sub)));
                match help {
                    Ok(help) => (&*help, format!("{} {sub}", run.binary)),
                    Err(e) => {
                        problems.push(format!("{at}: {e}"));
                        continue;
                    }
                }
            }
        };
        for flag in flags_in(&run.args) {
            if !help.flags.contains(flag) {
                problems.push(format!(
                    "{at}: `{shown}` has no flag `{flag}` (not in `{shown} --help`)"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in the docs' command lines:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The lines of a Markdown text outside its fenced code blocks (the fences included in
/// neither), each with its 1-based line number.
fn outside_fences(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match (fence, fence_of(trimmed)) {
            (None, Some(open)) => fence = Some(open),
            (Some((ch, len)), Some((close, close_len)))
                if ch == close && close_len >= len && trimmed[close_len..].trim().is_empty() =>
            {
                fence = None;
            }
            (Some(_), _) => {}
            (None, None) => lines.push((index + 1, line)),
        }
    }
    lines
}

/// A line with its inline code spans (`` `…` ``, ``` ``…`` ```) removed.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        match after.find(&closing) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The link targets of a Markdown text's prose, with their line numbers: inline links
/// `[text](target "title")` and reference definitions `[name]: target`.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in outside_fences(text) {
        let line = without_code_spans(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some(close) = trimmed.find("]:")
        {
            if let Some(target) = trimmed[close + 2..].split_whitespace().next() {
                found.push((number, target.to_owned()));
            }
            continue;
        }
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            if !target.is_empty() {
                found.push((number, target.to_owned()));
            }
            rest = &after[end..];
        }
    }
    found
}

/// The anchors a Markdown text's headings get: the heading's text (code spans keep their
/// text) lowercased, letters, digits, `-` and `_` kept, spaces made `-`, anything else
/// dropped, as both GitHub and mdBook do; a repeated heading gets `-1`, `-2`, ….
fn heading_anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, line) in outside_fences(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let anchor: String = line[hashes..]
            .trim()
            .chars()
            .filter_map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' {
                    Some(c.to_lowercase().next().unwrap_or(c))
                } else if c.is_whitespace() {
                    Some('-')
                } else {
                    None
                }
            })
            .collect();
        let count = seen.entry(anchor.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            anchor.clone()
        } else {
            format!("{anchor}-{count}")
        });
        *count += 1;
    }
    anchors
}

#[test]
fn every_relative_link_in_the_docs_points_at_a_file() {
    let root = workspace_root();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (file, text) in doc_files() {
        let dir = file.parent().unwrap_or(Path::new(""));
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let path = path.split('?').next().unwrap_or(path);
            let resolved = if path.is_empty() {
                root.join(&file)
            } else {
                root.join(dir).join(path)
            };
            checked += 1;
            if !resolved.exists() {
                problems.push(format!(
                    "{}:{line}: the link `{target}` points at {}, which does not exist",
                    file.display(),
                    resolved.strip_prefix(&root).unwrap_or(&resolved).display()
                ));
                continue;
            }
            let is_markdown = resolved.extension().is_some_and(|ext| ext == "md");
            if let (Some(anchor), true) = (anchor, is_markdown) {
                let anchors = heading_anchors(&std::fs::read_to_string(&resolved).unwrap());
                if !anchors.contains(anchor) {
                    problems.push(format!(
                        "{}:{line}: the link `{target}` names a heading `#{anchor}` that {} does not have",
                        file.display(),
                        resolved.strip_prefix(&root).unwrap_or(&resolved).display()
                    ));
                }
            }
        }
    }
    assert!(
        checked > 0,
        "no relative links found; is the link parser broken?"
    );
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_chapter_is_in_the_summary() {
    let root = workspace_root();
    let src = root.join("docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<PathBuf> = links(&summary)
        .into_iter()
        .map(|(_, target)| PathBuf::from("docs/src").join(target.split('#').next().unwrap()))
        .collect();
    let mut chapters = Vec::new();
    markdown_under(&root, Path::new("docs/src"), &mut chapters);
    let missing: Vec<String> = chapters
        .iter()
        .filter(|chapter| !chapter.ends_with("SUMMARY.md") && !listed.contains(*chapter))
        .map(|chapter| chapter.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "chapters not listed in docs/src/SUMMARY.md (mdBook would leave them out): {}",
        missing.join(", ")
    );

    let book = std::fs::read_to_string(root.join("docs/book.toml")).unwrap();
    assert!(
        book.lines()
            .any(|line| line.replace(' ', "") == "src=\"src\""),
        "docs/book.toml must say src = \"src\""
    );
}

#[test]
fn the_shell_reader_splits_commands_as_sh_does() {
    let block = Block {
        tag: "sh".into(),
        lines: [
            "VIGIL_KEY=x target/release/vigil-sql --archive ./a \\",
            "  \"SELECT 1 -- not a flag",
            "   FROM t\" # --nor-this",
            "vigil-bench guard --suite | head -1; ./run --guard composite",
            "cargo run -p vigil-datasets --bin vigil-datagen -- rocket --out x.ndjson",
        ]
        .iter()
        .enumerate()
        .map(|(i, line)| (i + 10, (*line).to_owned()))
        .collect(),
    };
    let found: Vec<(usize, Option<BinaryArgs>)> = shell_commands(&block)
        .iter()
        .map(|command| (command.line, invocation(&command.words)))
        .collect();
    let strings = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        found,
        vec![
            (
                10,
                Some((
                    "vigil-sql".into(),
                    strings(&["--archive", "./a", "SELECT 1 -- not a flag\n   FROM t"])
                ))
            ),
            (
                13,
                Some(("vigil-bench".into(), strings(&["guard", "--suite"])))
            ),
            (13, None),
            (
                13,
                Some(("vigil-guard".into(), strings(&["--guard", "composite"])))
            ),
            (
                14,
                Some((
                    "vigil-datagen".into(),
                    strings(&["rocket", "--out", "x.ndjson"])
                ))
            ),
        ]
    );
    assert_eq!(
        flags_in(&strings(&[
            "--archive=./a",
            "-w",
            "2",
            "-5",
            "--",
            "--later"
        ])),
        ["--archive", "-w"]
    );
}

#[test]
fn clap_help_is_read_for_options_and_subcommands() {
    let help = parse_help(
        "Usage: x [OPTIONS] <COMMAND>\n\nCommands:\n  guard  Runs it\n  help   Print this\n\n\
         Options:\n  -w, --workers <WORKERS>  Workers, see --not-this\n      --serve [<HOST:PORT>]\n          \
         Serve, unlike --nor-this\n  -h, --help  Print help\n",
    );
    let flags: Vec<&str> = help.flags.iter().map(String::as_str).collect();
    assert_eq!(flags, ["--help", "--serve", "--workers", "-h", "-w"]);
    let subcommands: Vec<&str> = help.subcommands.iter().map(String::as_str).collect();
    assert_eq!(subcommands, ["guard", "help"]);
}

#[test]
fn links_and_anchors_are_read_from_prose_only() {
    let text = "# vigil\n\n## Spill (offline first)\n\n## `vigil-sql` server\n\n## Spill (offline first)\n\n\
                See [this](a.md#x \"title\") and `[not](b.md)`.\n\n```sh\n[nor](c.md)\n## not a heading\n```\n\n\
                [ref]: d.md\n";
    let anchors: Vec<String> = heading_anchors(text).into_iter().collect();
    assert_eq!(
        anchors,
        [
            "spill-offline-first",
            "spill-offline-first-1",
            "vigil",
            "vigil-sql-server"
        ]
    );
    assert_eq!(
        links(text),
        [(9, "a.md#x".to_owned()), (16, "d.md".to_owned())]
    );
}
