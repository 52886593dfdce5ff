//! Motifs in numeric series: the SAX words of sliding windows that keep recurring per series.

use compact_str::CompactString;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::FastMap;
use crate::guards::zscore::is_degenerate_std;
use crate::model::{Pattern, SeriesReading};
use crate::stash::Stash;

/// The kind of the patterns this operator finds.
pub const KIND: &str = "motif";

/// How windows become words, and which words are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MotifParams {
    /// Readings per window (m, at least 2).
    pub window: usize,
    /// Letters per word (w, 1 to [`MotifParams::MAX_SEGMENTS`]); must divide `window`, each
    /// letter standing for `window / segments` consecutive readings.
    pub segments: usize,
    /// Letters of the alphabet (a, 3 to 8): `a` up to the `alphabet`-th letter.
    pub alphabet: usize,
    /// Words reported per series, at most (at least 1).
    pub top_k: usize,
    /// A word is reported once it has occurred this many times (0 counts as 1).
    pub min_count: u64,
}

impl Default for MotifParams {
    fn default() -> Self {
        Self {
            window: 16,
            segments: 4,
            alphabet: 4,
            top_k: 3,
            min_count: 3,
        }
    }
}

impl MotifParams {
    /// The longest word: each letter takes three bits of a `u64` code.
    pub const MAX_SEGMENTS: usize = 16;

    /// Checks the parameters, saying what to change.
    ///
    /// # Errors
    /// When a window is shorter than 2 readings, the word length is 0, longer than
    /// [`Self::MAX_SEGMENTS`] or does not divide the window, the alphabet has no breakpoint
    /// table (3 to 8 letters), or `top_k` is 0.
    pub fn validate(&self) -> Result<(), String> {
        if self.window < 2 {
            return Err(format!(
                "window is {}: a motif window needs at least 2 readings",
                self.window
            ));
        }
        if !(1..=Self::MAX_SEGMENTS).contains(&self.segments) {
            return Err(format!(
                "segments is {}: a SAX word has 1 to {} letters",
                self.segments,
                Self::MAX_SEGMENTS
            ));
        }
        if !self.window.is_multiple_of(self.segments) {
            return Err(format!(
                "window {} is not a multiple of segments {}: each letter must average the same \
                 number of readings",
                self.window, self.segments
            ));
        }
        if breakpoints(self.alphabet).is_none() {
            return Err(format!(
                "alphabet is {}: SAX breakpoints are tabled for 3 to 8 letters",
                self.alphabet
            ));
        }
        if self.top_k == 0 {
            return Err("top_k is 0: at least one motif per series must be reported".into());
        }
        Ok(())
    }
}

/// The standard SAX breakpoints (quantiles of the standard normal distribution that cut it into
/// `alphabet` equally likely parts), for alphabets of 3 to 8 letters.
const BREAKPOINTS: [&[f64]; 6] = [
    &[-0.43, 0.43],
    &[-0.67, 0.0, 0.67],
    &[-0.84, -0.25, 0.25, 0.84],
    &[-0.97, -0.43, 0.0, 0.43, 0.97],
    &[-1.07, -0.57, -0.18, 0.18, 0.57, 1.07],
    &[-1.15, -0.67, -0.32, 0.0, 0.32, 0.67, 1.15],
];

/// The breakpoints of an alphabet of `alphabet` letters, if tabled.
fn breakpoints(alphabet: usize) -> Option<&'static [f64]> {
    BREAKPOINTS.get(alphabet.checked_sub(3)?).copied()
}

/// A SAX word as a code: its letters (0 for `a`) as base-8 digits, the first letter the most
/// significant, so that words of one length order as their strings do.
type Word = u64;

/// The letters of a word of `segments` letters.
fn word_string(word: Word, segments: usize) -> String {
    (0..segments)
        .rev()
        .map(|j| char::from(b'a' + ((word >> (3 * j)) & 7) as u8))
        .collect()
}

/// The SAX word of a full window (`values` oldest first), or `None` if the window is flat.
///
/// The arithmetic is spelled out, in this order, so that a reference computed from scratch
/// gives the same bits: mean = (Σx) / m; std = √((Σ(x − mean)²) / m); each part of
/// m / w readings gives (Σ (x − mean) / std) / (m / w), and its letter is the number of
/// breakpoints at or below that.
fn sax_word(values: &[f64], segments: usize, breakpoints: &[f64]) -> Option<Word> {
    let m = values.len() as f64;
    let mut sum = 0.0;
    for &x in values {
        sum += x;
    }
    let mean = sum / m;
    let mut squares = 0.0;
    for &x in values {
        let d = x - mean;
        squares += d * d;
    }
    let std = (squares / m).sqrt();
    // Not finite: readings so large their spread overflows; no shape can be read from it.
    if !std.is_finite() || is_degenerate_std(std, mean) {
        return None;
    }
    let len = values.len() / segments.max(1);
    let mut word: Word = 0;
    for part in values.chunks_exact(len.max(1)) {
        let mut z = 0.0;
        for &x in part {
            z += (x - mean) / std;
        }
        let paa = z / len as f64;
        let letter = breakpoints.partition_point(|&b| b <= paa) as Word;
        word = (word << 3) | letter;
    }
    Some(word)
}

/// How often a word occurred in a series, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    occurrences: u64,
    /// Event time of the first reading of the window of the first occurrence.
    first_seen: i64,
    /// Event time of the last reading of the window of the latest occurrence.
    last_seen: i64,
}

/// What a series keeps: its last window, its previous word, its word table, and the records
/// it has in the collection.
struct Series {
    source: CompactString,
    name: CompactString,
    /// The last `window` readings (event time, value); once full, `head` is the oldest.
    ring: Vec<(i64, f64)>,
    head: usize,
    /// The word of the previous window, `None` after a flat window or before the first.
    previous: Option<Word>,
    /// At most `alphabet^segments` entries.
    words: FastMap<Word, Seen>,
    /// The current top: at most `top_k` records.
    emitted: Vec<(Word, Seen, Pattern)>,
}

impl Series {
    fn new(point: &SeriesReading, window: usize) -> Self {
        Self {
            source: point.source.clone(),
            name: point.name.clone(),
            ring: Vec::with_capacity(window),
            head: 0,
            previous: None,
            words: FastMap::default(),
            emitted: Vec::new(),
        }
    }

    /// Takes the next reading in event-time order; true if a word occurred.
    fn push(&mut self, ts: i64, value: f64, params: &MotifParams, scratch: &mut Vec<f64>) -> bool {
        let window = params.window;
        if self.ring.len() < window {
            self.ring.push((ts, value));
            if self.ring.len() < window {
                return false;
            }
        } else if let Some(slot) = self.ring.get_mut(self.head) {
            *slot = (ts, value);
            self.head = (self.head + 1) % window;
        }
        // Recomputed from the window itself, oldest first, never from running sums.
        let (newer, older) = self.ring.split_at(self.head);
        let first_ts = older.first().map_or(ts, |&(t, _)| t);
        scratch.clear();
        scratch.extend(older.iter().chain(newer).map(|&(_, v)| v));
        let bps = breakpoints(params.alphabet).unwrap_or(&[]);
        match sax_word(scratch, params.segments, bps) {
            None => {
                self.previous = None;
                false
            }
            // The same shape held still is one occurrence.
            Some(word) if self.previous == Some(word) => false,
            Some(word) => {
                self.previous = Some(word);
                let seen = self.words.entry(word).or_insert(Seen {
                    occurrences: 0,
                    first_seen: first_ts,
                    last_seen: ts,
                });
                seen.occurrences += 1;
                seen.last_seen = ts;
                true
            }
        }
    }

    /// Brings the emitted records to the current top: retracts those that changed or left it,
    /// inserts the new ones. `ranked` is a reused buffer.
    fn refresh(
        &mut self,
        params: &MotifParams,
        ranked: &mut Vec<(Word, Seen)>,
        updates: &mut Vec<(Pattern, isize)>,
    ) {
        ranked.clear();
        ranked.extend(
            self.words
                .iter()
                .filter(|(_, s)| s.occurrences >= params.min_count)
                .map(|(&w, &s)| (w, s)),
        );
        let order = |a: &(Word, Seen), b: &(Word, Seen)| {
            b.1.occurrences.cmp(&a.1.occurrences).then(a.0.cmp(&b.0))
        };
        if ranked.len() > params.top_k {
            ranked.select_nth_unstable_by(params.top_k - 1, order);
            ranked.truncate(params.top_k);
        }
        let mut i = 0;
        while i < self.emitted.len() {
            let (w, s, _) = &self.emitted[i];
            if ranked.contains(&(*w, *s)) {
                i += 1;
            } else {
                let (_, _, gone) = self.emitted.swap_remove(i);
                updates.push((gone, -1));
            }
        }
        for &(w, s) in ranked.iter() {
            if !self.emitted.iter().any(|(ew, es, _)| (*ew, *es) == (w, s)) {
                let record = self.record(w, s, params.segments);
                updates.push((record.clone(), 1));
                self.emitted.push((w, s, record));
            }
        }
    }

    /// The record of a word of this series.
    fn record(&self, word: Word, seen: Seen, segments: usize) -> Pattern {
        let items = vec![self.name.clone(), word_string(word, segments).into()];
        Pattern {
            pattern_id: Pattern::id(KIND, Some(&self.source), &items),
            kind: KIND.into(),
            items,
            support: 1,
            occurrences: seen.occurrences,
            first_seen: seen.first_seen,
            last_seen: seen.last_seen,
            sources: vec![self.source.clone()],
        }
    }
}

/// The state of one worker: its series, found by series hash (a bucket per hash, in case two
/// series share one), and reused buffers.
struct MotifState {
    params: MotifParams,
    series: FastMap<u64, Vec<Series>>,
    scratch: Vec<f64>,
    ranked: Vec<(Word, Seen)>,
}

impl MotifState {
    fn new(params: MotifParams) -> Self {
        Self {
            params,
            series: FastMap::default(),
            scratch: Vec::with_capacity(params.window),
            ranked: Vec::new(),
        }
    }

    /// Takes complete points, sorted by series and then event time, and records the changes to
    /// the tops of the series they touched.
    fn ingest(&mut self, ready: &[SeriesReading], updates: &mut Vec<(Pattern, isize)>) {
        let mut rest = ready;
        while let Some(first) = rest.first() {
            let n = rest.iter().take_while(|p| p.same_series(first)).count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let bucket = self.series.entry(first.hash).or_default();
            let at = bucket
                .iter()
                .position(|s| s.source == first.source && s.name == first.name)
                .unwrap_or_else(|| {
                    bucket.push(Series::new(first, self.params.window));
                    bucket.len() - 1
                });
            let Some(series) = bucket.get_mut(at) else {
                continue;
            };
            let mut occurred = false;
            for p in group {
                occurred |= series.push(p.ts, p.value, &self.params, &mut self.scratch);
            }
            if occurred {
                series.refresh(&self.params, &mut self.ranked, updates);
            }
        }
    }
}

/// Finds the recurring shapes (motifs) of numeric series.
pub trait Motifs<'scope> {
    /// The collection of each series' top motifs, as SAX words.
    ///
    /// Each series (source, name) is taken in event-time order (ties by value), once the
    /// frontier has passed a reading's event time; series are spread over workers by their
    /// hash. From the `window`-th reading on, each reading closes a window of the last
    /// `window` values, which are z-normalized (mean, population standard deviation) and cut
    /// into `segments` equal parts; the mean of each part (PAA) becomes a letter by the
    /// standard SAX Gaussian breakpoints of an `alphabet`-letter alphabet (`a` lowest; a mean
    /// equal to a breakpoint takes the letter above it). A window whose standard deviation is
    /// at most 1e-9 × max(1, |mean|) (or not finite) is flat: it has no word and the series
    /// forgets its previous word. Words are recomputed from each window, never from running
    /// sums, so a reference computed from scratch gets the same words.
    ///
    /// A word occurs when a window's word differs from the previous window's (numerosity
    /// reduction: a shape held still is one occurrence, dated by the window where it began).
    /// Per (series, word) the operator counts occurrences, `first_seen` (event time of the
    /// first reading of the window of the first occurrence) and `last_seen` (of the last
    /// reading of the window of the latest occurrence). A reading that arrives after the
    /// frontier has passed its event time is taken when it comes, after the later ones.
    ///
    /// The collection holds, per series, the `top_k` words by occurrences (ties: the word
    /// alphabetically first) among those that occurred at least `min_count` times, as
    /// [`Pattern`]s of kind `motif` with items `[name, word]`, support 1 and the series'
    /// source, their id [`Pattern::id`]`("motif", Some(source), [name, word])`. When a
    /// word occurs, the records of its series that changed or left the top are retracted and
    /// the new ones inserted, so the collection is always the current top. State per series
    /// is the last window, the previous word and the word table (at most
    /// `alphabet^segments` words), whatever the length of the input.
    ///
    /// # Panics
    /// When `params` are not valid ([`MotifParams::validate`]), as the dataflow is built.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
    /// use vigil_operators::archaeology::motifs::{MotifParams, Motifs};
    /// use vigil_operators::{SeriesReading, Reading};
    ///
    /// // A sawtooth 0, 1, 2, 3, 0, 1, … : its windows of 4 read "ac", "bb", "ca", "bb", …
    /// let params = MotifParams { window: 4, segments: 2, alphabet: 3, top_k: 2, min_count: 3 };
    /// let captured = timely::example(move |scope| {
    ///     (0..12)
    ///         .map(|i| SeriesReading::from(&Reading::new("veh-1", "thrust", i * 1_000, (i % 4) as f64)))
    ///         .collect::<Vec<_>>()
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .motifs(params)
    ///         .consolidate()
    ///         .inner
    ///         .capture()
    /// });
    /// let mut top: Vec<_> = captured
    ///     .extract()
    ///     .into_iter()
    ///     .flat_map(|(_, d)| d)
    ///     .map(|(p, _, _)| (p.items[1].to_string(), p.occurrences))
    ///     .collect();
    /// top.sort();
    /// assert_eq!(top, [("ac".to_string(), 3), ("bb".to_string(), 4)]);
    /// ```
    fn motifs(self, params: MotifParams) -> VecCollection<'scope, u64, Pattern, isize>;
}

impl<'scope> Motifs<'scope> for Stream<'scope, u64, Vec<SeriesReading>> {
    fn motifs(self, params: MotifParams) -> VecCollection<'scope, u64, Pattern, isize> {
        if let Err(problem) = params.validate() {
            panic!("invalid motif parameters: {problem}");
        }
        let exchange = Exchange::new(|p: &SeriesReading| p.hash);
        self.unary_frontier(exchange, "Motifs", move |_cap, _info| {
            let mut stash = Stash::new();
            let mut state = MotifState::new(params);
            let mut updates: Vec<(Pattern, isize)> = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    stash.receive(cap.retain_least(output.output_index()), data)
                });
                let bound = frontier.frontier().first().copied();
                // Readings before the frontier are complete: in event-time order per series.
                let mut ready: Vec<SeriesReading> = stash.ready(bound, |p| p.ts);
                ready.sort_unstable_by(|a, b| {
                    (a.hash, &a.source, &a.name, a.ts)
                        .cmp(&(b.hash, &b.source, &b.name, b.ts))
                        .then(a.value.total_cmp(&b.value))
                });
                state.ingest(&ready, &mut updates);
                let Some(cap) = stash.held.as_mut() else {
                    updates.clear();
                    return;
                };
                if !updates.is_empty() {
                    let time = *cap.time();
                    output
                        .session(&*cap)
                        .give_iterator(updates.drain(..).map(|(p, d)| (p, time, d)));
                }
                match bound {
                    Some(b) if !stash.pending.is_empty() => {
                        if *cap.time() < b {
                            cap.downgrade(&b);
                        }
                    }
                    _ => stash.held = None,
                }
            }
        })
        .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_explains_what_to_change() {
        assert_eq!(MotifParams::default().validate(), Ok(()));
        let bad = |p: MotifParams| p.validate().err().unwrap_or_default();
        let d = MotifParams::default();
        assert!(bad(MotifParams { window: 1, ..d }).contains("at least 2 readings"));
        assert!(bad(MotifParams { segments: 0, ..d }).contains("1 to 16 letters"));
        assert!(
            bad(MotifParams {
                window: 32,
                segments: 32,
                ..d
            })
            .contains("1 to 16 letters")
        );
        assert!(bad(MotifParams { segments: 5, ..d }).contains("not a multiple of segments 5"));
        assert!(bad(MotifParams { segments: 32, ..d }).contains("1 to 16"));
        assert!(bad(MotifParams { alphabet: 2, ..d }).contains("3 to 8 letters"));
        assert!(bad(MotifParams { alphabet: 9, ..d }).contains("3 to 8 letters"));
        assert!(bad(MotifParams { top_k: 0, ..d }).contains("top_k is 0"));
        assert_eq!(
            MotifParams {
                alphabet: 8,
                segments: 16,
                ..d
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn a_hand_computed_word() {
        // Mean 0, population std √((4·9 + 4·1) / 8) = √5: the part means are ±3/√5 = ±1.34
        // and ±1/√5 = ±0.45 standard deviations.
        let values = [3.0, 3.0, -3.0, -3.0, 1.0, 1.0, -1.0, -1.0];
        let word = |alphabet| {
            sax_word(&values, 4, breakpoints(alphabet).unwrap_or(&[])).map(|w| word_string(w, 4))
        };
        // Breakpoints −0.67, 0, 0.67: 1.34 → d, −1.34 → a, 0.45 → c, −0.45 → b.
        assert_eq!(word(4).as_deref(), Some("dacb"));
        // Breakpoints ±0.43: 0.45 is above the upper one, −0.45 below the lower one.
        assert_eq!(word(3).as_deref(), Some("caca"));
        // Eight letters (…, −0.32, 0, 0.32, 0.67, 1.15): 1.34 → h, 0.45 → f, −0.45 → c.
        assert_eq!(word(8).as_deref(), Some("hafc"));
        // A constant window is flat.
        assert_eq!(sax_word(&[7.0; 8], 4, breakpoints(4).unwrap_or(&[])), None);
    }

    #[test]
    fn a_held_shape_is_one_occurrence_and_a_flat_window_forgets_it() {
        let params = MotifParams {
            window: 4,
            segments: 2,
            alphabet: 3,
            top_k: 3,
            min_count: 1,
        };
        // Windows: [0,0,1,1] "ac"; [0,1,1,1] "ac" again, held (parts −0.58, +0.58 std);
        // [1,1,1,1] flat; [1,1,1,5] "ac" (parts −0.58, +0.58 std), a new occurrence.
        let values = [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 5.0];
        let points: Vec<SeriesReading> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| SeriesReading::from(&crate::Reading::new("s", "x", i as i64 * 10, v)))
            .collect();
        let mut state = MotifState::new(params);
        let mut updates = Vec::new();
        state.ingest(&points, &mut updates);
        let seen: Vec<_> = updates
            .iter()
            .map(|(p, d)| {
                (
                    p.items[1].as_str(),
                    p.occurrences,
                    p.first_seen,
                    p.last_seen,
                    *d,
                )
            })
            .collect();
        assert_eq!(seen, [("ac", 2, 0, 60, 1)]);
        assert_eq!(
            updates[0].0.pattern_id,
            Pattern::id("motif", Some("s"), &["x", "ac"])
        );
    }
}
