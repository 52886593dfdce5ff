//! The Grafana dashboard in `deploy/grafana/vigil.json`, checked against what the jobs export:
//! every metric a panel's query names must be a family some job serves at `/metrics`.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Where the dashboard is.
pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/vigil.json")
}

/// The `vigil_…` metric names the dashboard's queries use, as written (with `_total`,
/// `_bucket`, …).
///
/// # Panics
/// When the dashboard is missing or not JSON.
pub fn metric_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(path()).expect("the dashboard is in deploy/grafana");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has queries");
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("vigil_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The family a sample name belongs to: `vigil_events_in_total` → `vigil_events_in`.
pub fn family(name: &str) -> &str {
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created", "_info"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

/// The dashboard's names whose family `exposition` (the text of `/metrics`) does not declare,
/// among those `wanted` keeps.
pub fn missing_from(exposition: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    metric_names()
        .into_iter()
        .filter(|name| wanted(name))
        .filter(|name| !exposition.contains(&format!("# TYPE {} ", family(name))))
        .collect()
}
