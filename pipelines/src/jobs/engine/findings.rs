//! What an archaeology run found, and the report it prints.

use vigil_operators::Pattern;
use vigil_operators::archaeology::entanglements::Entanglement;
use vigil_operators::archaeology::field::FieldSnapshot;

/// What a run found, gathered from the workers at the end of the input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    /// The patterns at the end, most supported first.
    pub patterns: Vec<Pattern>,
    /// Sessions found (all closed at the end of the input).
    pub sessions: u64,
    /// Of those, how many each key (room or source) had.
    pub sessions_by_key: std::collections::BTreeMap<String, u64>,
    /// The entangled pairs at the end, strongest first.
    pub entanglements: Vec<Entanglement>,
    /// The field's newest snapshot.
    pub field: Option<FieldSnapshot>,
}

impl Findings {
    /// Orders patterns by support, then occurrences, then items, and keeps all of them (the
    /// report shows the first `top`); entanglements by lift.
    pub fn rank(&mut self, _top: usize) {
        self.patterns.sort_by(|a, b| {
            (b.support, b.occurrences, &a.kind, &a.items, &a.sources).cmp(&(
                a.support,
                a.occurrences,
                &b.kind,
                &b.items,
                &b.sources,
            ))
        });
        self.entanglements.sort_by(|a, b| {
            (b.lift_milli, b.together, &a.a, &a.b).cmp(&(a.lift_milli, a.together, &b.a, &b.b))
        });
    }

    /// The lists the live page shows: the `top` patterns, the `top` strongest pairs, and the
    /// sessions of each key (room or source).
    pub fn live_view(&self, top: usize) -> crate::sinks::live::ArchaeologyView {
        let patterns = self
            .patterns
            .iter()
            .take(top)
            .map(|p| {
                let pattern = match p.kind.as_str() {
                    "motif" => format!("{} {}", p.sources.join(","), p.items.join(" ")),
                    _ => p.items.join(" → "),
                };
                serde_json::json!({"pattern": pattern, "kind": p.kind, "support": p.support})
            })
            .collect();
        let entanglements = self
            .entanglements
            .iter()
            .take(top)
            .map(|e| serde_json::json!({"a": e.a, "b": e.b, "score": e.lift_milli as f64 / 1000.0}))
            .collect();
        let sessions = self
            .sessions_by_key
            .iter()
            .map(|(room, n)| serde_json::json!({"room": room, "sessions": n}))
            .collect();
        crate::sinks::live::ArchaeologyView {
            patterns: serde_json::Value::Array(patterns),
            entanglements: serde_json::Value::Array(entanglements),
            sessions: serde_json::Value::Array(sessions),
        }
    }

    /// The findings as JSON, for scripts.
    pub fn to_json(&self) -> serde_json::Value {
        let sequences = self
            .patterns
            .iter()
            .filter(|p| p.kind == "sequence")
            .count();
        serde_json::json!({
            "patterns": self.patterns.len(),
            "sequence_patterns": sequences,
            "motifs": self.patterns.len() - sequences,
            "sessions": self.sessions,
            "entanglements": self.entanglements.len(),
            "resonance": self.field.as_ref().map(|f| f.resonance),
            "active_sources": self.field.as_ref().map(|f| f.active_sources),
        })
    }

    /// The end-of-run report: the `top` patterns of each kind and the strongest pairs.
    pub fn report(&self, top: usize) -> String {
        let mut out = String::new();
        for kind in ["sequence", "motif"] {
            let of_kind: Vec<&Pattern> = self.patterns.iter().filter(|p| p.kind == kind).collect();
            out.push_str(&format!(
                "{} {kind} patterns; the top {}:\n{:<40} {:>8} {:>11}  {:<24} {:<24}\n",
                of_kind.len(),
                top.min(of_kind.len()),
                "ITEMS",
                "SUPPORT",
                "OCCURRENCES",
                "FIRST SEEN",
                "LAST SEEN"
            ));
            for p in of_kind.iter().take(top) {
                let items = match kind {
                    "motif" => format!("{} {}", p.sources.join(","), p.items.join(" ")),
                    _ => p.items.join(" → "),
                };
                out.push_str(&format!(
                    "{items:<40} {:>8} {:>11}  {:<24} {:<24}\n",
                    p.support,
                    p.occurrences,
                    vigil_operators::time::format_ts(p.first_seen),
                    vigil_operators::time::format_ts(p.last_seen)
                ));
            }
        }
        out.push_str(&format!(
            "{} entangled pairs; the strongest {}:\n",
            self.entanglements.len(),
            top.min(self.entanglements.len())
        ));
        for e in self.entanglements.iter().take(top) {
            out.push_str(&format!(
                "{} ~ {}  together {}  lift {:.1}  since {}\n",
                e.a,
                e.b,
                e.together,
                e.lift_milli as f64 / 1000.0,
                vigil_operators::time::format_ts(e.since)
            ));
        }
        out.push_str(&format!("{} sessions\n", self.sessions));
        out
    }
}
