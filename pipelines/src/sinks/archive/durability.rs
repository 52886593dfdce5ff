//! How far each archive sink's output is in the store.

/// How far each archive sink's output is durable, for committing input positions (Kafka
/// offsets) only once everything read before them is in the store.
#[derive(Debug, Default)]
pub struct Durability {
    /// Per registered sink: event time before which all of its files are in the store.
    slots: std::sync::Mutex<Vec<i64>>,
}

impl Durability {
    /// A new sink's slot, nothing durable yet.
    pub(super) fn register(&self) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.push(i64::MIN);
        slots.len() - 1
    }

    /// Sink `slot`'s files before `before_ms` are in the store.
    pub(super) fn set(&self, slot: usize, before_ms: i64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get_mut(slot) {
            *s = (*s).max(before_ms);
        }
    }

    /// The event time before which every sink's records are in the store; `None` until all
    /// `sinks` expected have registered (a sink that has not registered yet may still write).
    pub fn durable_before(&self, sinks: usize) -> Option<i64> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        (slots.len() >= sinks).then(|| slots.iter().copied().min().unwrap_or(i64::MIN))
    }
}
