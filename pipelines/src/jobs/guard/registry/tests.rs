//! The registry against its own documentation: the parameters each kind lists are its
//! struct's, with the operator's defaults, and the user guide shows the catalogue as it is.

use std::collections::BTreeSet;

use vigil_operators::{Burst, Rate};

use super::*;

/// The `key=value` alternatives a catalogue line documents (`a=1 b=2 | c=3`).
fn documented(parameters: &str) -> Vec<Vec<(&str, &str)>> {
    parameters
        .split(" | ")
        .map(|way| {
            way.split_whitespace()
                .map(|pair| pair.split_once('=').expect("documented as key=value"))
                .collect()
        })
        .collect()
}

/// A documented value that stands for what the user writes (`METRIC`, `…`).
fn placeholder(value: &str) -> bool {
    value.contains('…') || value.chars().any(|c| c.is_ascii_uppercase()) && value != "AUTH_FAILURE"
}

fn spec(kind: &GuardKind, pairs: &[(&str, &str)]) -> GuardParams {
    kind.read(Table::from_pairs(pairs))
        .unwrap_or_else(|e| panic!("{} with {pairs:?}: {e}", kind.kind))
}

#[test]
fn every_kind_documents_exactly_its_parameters() {
    for kind in CATALOGUE {
        let serde_json::Value::Object(defaults) = kind.defaults() else {
            panic!("{}: the parameters are a struct", kind.kind);
        };
        let fields: BTreeSet<&str> = defaults.keys().map(String::as_str).collect();
        let listed: BTreeSet<&str> = documented(kind.parameters)
            .into_iter()
            .flatten()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(listed, fields, "{}: {}", kind.kind, kind.parameters);
    }
}

#[test]
fn the_documented_defaults_are_the_defaults() {
    for kind in CATALOGUE {
        for way in documented(kind.parameters) {
            // What the user must write either way; the rest is documented as its default.
            let given: Vec<(&str, &str)> = way
                .iter()
                .filter(|(_, value)| placeholder(value))
                .map(|(key, _)| (*key, "1"))
                .collect();
            let all: Vec<(&str, &str)> = way
                .iter()
                .map(|(key, value)| (*key, if placeholder(value) { "1" } else { value }))
                .collect();
            assert_eq!(
                spec(kind, &all),
                spec(kind, &given),
                "{}: {way:?}",
                kind.kind
            );
        }
    }
}

#[test]
fn flags_and_job_files_read_the_same_parameters() {
    let toml = |kind: &str, text: &str| {
        let table: toml::Table = toml::from_str(text).unwrap_or_default();
        GuardKind::named(kind)
            .map(|k| k.read(Table::from_toml("", table)))
            .map(|r| r.map_err(|e| e.to_string()))
    };
    let flag = |text: &str| GuardParams::parse(text).ok();
    assert_eq!(
        toml("seasonal", "period = \"7d\"\nbuckets = 12\nthreshold = 4").and_then(Result::ok),
        flag("seasonal:period=7d,buckets=12,threshold=4")
    );
    assert_eq!(
        toml("unknown_source", "registry = [\"veh-*\", \"ground-1\"]").and_then(Result::ok),
        flag("unknown_source:registry=veh-*|ground-1")
    );
    assert_eq!(
        toml("threshold", "name = \"temp_c\"\nmax = 90").and_then(Result::ok),
        flag("threshold:name=temp_c,max=90.0")
    );
    assert_eq!(
        toml("zscore", "window = -5")
            .and_then(Result::err)
            .as_deref(),
        Some("window = -5: must not be negative")
    );
}

#[test]
fn bad_flags_say_what_is_wrong() {
    let err = |text: &str| format!("{:#}", GuardParams::parse(text).expect_err(text));
    let e = err("median:k=3");
    assert!(
        e.contains("unknown guard `median`") && e.contains("schema_violations"),
        "{e}"
    );
    let e = err("zscore:windw=3");
    assert!(
        e.contains("unknown parameter `windw`") && e.contains("window"),
        "{e}"
    );
    let e = err("zscore:window");
    assert!(e.contains("is not key=value"), "{e}");
    let e = err("zscore:window=1");
    assert!(e.contains("window must be at least 2"), "{e}");
    let e = err("zscore:window=abc");
    assert!(e.contains("window=abc: not a whole number"), "{e}");
    let e = err("ewma:threshold=-1");
    assert!(e.contains("threshold") && e.contains("positive"), "{e}");
    let e = err("zscore:threshold=4,clear=5");
    assert!(e.contains("clear must be between 0 and threshold"), "{e}");
    let e = err("threshold:max=5");
    assert!(e.contains("needs name="), "{e}");
    let e = err("threshold:name=m");
    assert!(e.contains("needs min=… or max=…"), "{e}");
    let e = err("rate:max=5,span=3");
    assert!(e.contains("span does not go with max"), "{e}");
    let e = err("rate:order=3");
    assert!(e.contains("order is 1"), "{e}");
    let e = err("late_records:event=X");
    assert!(e.contains("unknown parameter `event`"), "{e}");
    let e = err("auth_failures:limit=1,clear=2");
    assert!(e.contains("clear must be at most limit"), "{e}");
    let e = err("unknown_source:registry=|");
    assert!(e.contains("the registry is empty"), "{e}");
    let e = err("seasonal:period=soon");
    assert!(e.contains("period=soon: not a duration"), "{e}");
    let e = err("composite:raise_p=0.9,clear_p=0.5");
    assert!(e.contains("raise_p ≤ clear_p"), "{e}");
}

#[test]
fn flags_build_the_operators_guards() {
    let parse = |text: &str| GuardParams::parse(text).unwrap();
    assert_eq!(parse("zscore"), GuardParams::ZScore(ZScore::default()));
    assert_eq!(
        parse("zscore:window=30,threshold=4"),
        GuardParams::ZScore(ZScore::new(30, 4.0))
    );
    assert_eq!(parse("rate:max=50"), GuardParams::Rate(Rate::bounded(50.0)));
    assert_eq!(
        parse("auth_failures:limit=1"),
        GuardParams::Burst(
            "auth_failures",
            Burst {
                limit: 1,
                clear: 1,
                ..Burst::auth_failures()
            }
        )
    );
    let guards = GuardParams::parse_all(&[
        "threshold:name=a,max=1".into(),
        "threshold:name=b,min=0".into(),
    ])
    .unwrap();
    assert_eq!(
        guards.len(),
        1,
        "threshold guards on different metrics merge"
    );
    assert_eq!(guards[0].reaction, CATALOGUE[1].reaction());
}

/// The user-guide chapter that lists the guards, and the markers around its table.
const GUIDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/src/guard.md");
const BEGIN: &str = "<!-- guards:begin -->\n";
const END: &str = "<!-- guards:end -->";

/// Run with `VIGIL_BLESS=1` to write the table into the guide after changing the catalogue.
#[test]
fn the_user_guide_shows_the_catalogue() {
    let text = std::fs::read_to_string(GUIDE).expect("the user guide's guard chapter");
    let (before, rest) = text
        .split_once(BEGIN)
        .unwrap_or_else(|| panic!("{GUIDE} marks its guard table with {BEGIN:?}"));
    let (table, after) = rest
        .split_once(END)
        .unwrap_or_else(|| panic!("{GUIDE} ends its guard table with {END:?}"));
    let generated = markdown_table();
    if table != generated && std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::write(GUIDE, format!("{before}{BEGIN}{generated}{END}{after}"))
            .expect("the guide is writable");
        return;
    }
    assert_eq!(
        table, generated,
        "{GUIDE} shows another guard table than the registry's: run this test with VIGIL_BLESS=1"
    );
}
