//! Charts without a server: a query's time series drawn as lines in an SVG file, or in an HTML
//! page that holds the same SVG inline, with alert intervals shaded under the lines.
//!
//! The query returns `(ts, value)` or `(ts, value, series)`: `ts` an Arrow timestamp of any
//! unit (drawn in UTC) or an `Int64` of epoch milliseconds, `value` any number, `series` a name
//! (one line and one legend entry each, at most [`MAX_SERIES`]). Rows without a time or with a
//! value that is NULL or not finite are left out. Each series is drawn in time order; one of
//! more than [`MAX_POINTS`] readings is thinned to the lowest and the highest reading of each
//! of [`SLICES`] equal slices of the time axis, which keeps its peaks and troughs and bounds
//! the file whatever the query returns. A query with no rows draws a chart that says so, so a
//! script that charts every day still gets a file for a quiet one.
//!
//! The alert query returns `(start, end)` or `(start, end, series)`: times as above, `end`
//! NULL while an alert is open (shaded to the right edge). Bands are translucent, under the
//! lines, in their series' colour when the series is named, else red.
//!
//! plotters draws; this module only turns Arrow columns into points and picks the axes. The
//! file is written to a temporary name and renamed over the target, so a reader never sees half
//! a chart and a failed query leaves the previous chart in place.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::TimestampMillisecondType;
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use plotters::prelude::{
    BLACK, ChartBuilder, Color, IntoDrawingArea, IntoFont, LineSeries, PathElement, RGBColor,
    RangedDateTime, Rectangle, SVGBackend, SeriesLabelPosition, Text, TextStyle, WHITE,
};
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::failure::Failure;
use crate::session::{QueryError, Session};

/// The most points one series is drawn with; a longer series is thinned to this.
pub const MAX_POINTS: usize = 4000;

/// The slices of the time axis a thinned series keeps its lowest and highest reading of.
pub const SLICES: usize = MAX_POINTS / 2;

/// The most series one chart draws: one colour each, so every line can be told apart.
pub const MAX_SERIES: usize = PALETTE.len();

/// The chart's size in pixels.
const SIZE: (u32, u32) = (1200, 600);

/// The series' colours (Tableau 10), in the order of the series' names.
const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(89, 161, 79),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

/// The colour of an alert band that names no series of the chart.
const ALERT: RGBColor = RGBColor(214, 39, 40);

/// How opaque alert bands are: the lines and the grid show through them.
const ALERT_OPACITY: f64 = 0.18;

/// The narrowest an alert band is drawn, in pixels, so that a short alert still shows.
const MIN_BAND_PIXELS: f64 = 3.0;

/// The longest title and series name drawn, in characters.
const TITLE_CHARS: usize = 90;
const NAME_CHARS: usize = 40;

/// The extensions `--chart` accepts, for messages.
pub const CHART_EXTENSIONS: &str = ".svg, .html or .htm";

/// What a chart file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    /// An SVG image.
    Svg,
    /// An HTML page with the SVG inline and nothing loaded from elsewhere.
    Html,
}

/// Where a chart goes, and as what: told by the file's extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartFile {
    /// The file written.
    pub path: PathBuf,
    /// What it holds.
    pub kind: ChartKind,
}

impl ChartFile {
    /// The chart file `path` names, by its extension.
    ///
    /// # Errors
    /// When the extension is not one of [`CHART_EXTENSIONS`].
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let kind = match extension.as_deref() {
            Some("svg") => ChartKind::Svg,
            Some("html" | "htm") => ChartKind::Html,
            _ => {
                return Err(format!(
                    "{}: a chart is written as {CHART_EXTENSIONS}; name the file so",
                    path.display()
                ));
            }
        };
        Ok(Self { path, kind })
    }
}

/// What to chart.
#[derive(Debug, Clone, Copy)]
pub struct ChartSpec<'a> {
    /// The query of readings; with several statements, the last one's result.
    pub sql: &'a str,
    /// The query of alert intervals to shade, if any.
    pub alerts: Option<&'a str>,
    /// The title; by default the query, shortened.
    pub title: Option<&'a str>,
    /// Where the chart goes.
    pub file: &'a ChartFile,
}

/// What a written chart shows, for the line that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawn {
    /// The file written.
    pub path: PathBuf,
    /// Lines drawn.
    pub series: usize,
    /// Readings the query returned that could be drawn.
    pub readings: usize,
    /// Points drawn, after thinning.
    pub points: usize,
    /// Alert bands shaded.
    pub intervals: usize,
}

impl fmt::Display for Drawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chart written to {}: {} series, {} of {} readings drawn, {} alert intervals",
            self.path.display(),
            self.series,
            self.points,
            self.readings,
            self.intervals
        )
    }
}

/// Runs the chart's queries, draws the chart and writes its file.
///
/// # Errors
/// A failing query as [`Failure::Query`]; a result of the wrong shape, or a file that cannot
/// be written, as [`Failure::Usage`].
pub async fn draw(session: &Session, spec: &ChartSpec<'_>) -> Result<Drawn, Failure> {
    let answer = session.query(spec.sql).await?;
    let readings =
        Readings::from_batches(&answer.schema, &answer.batches).map_err(Failure::Usage)?;
    let intervals = match spec.alerts {
        Some(sql) => {
            let answer = session.query(sql).await.map_err(|error| match error {
                QueryError::Failed(message) => {
                    QueryError::Failed(format!("the --chart-alerts query: {message}"))
                }
                other => other,
            })?;
            intervals(&answer.schema, &answer.batches).map_err(Failure::Usage)?
        }
        None => Vec::new(),
    };
    let title = label(spec.title.unwrap_or(spec.sql), TITLE_CHARS);
    let chart = Chart::new(title, readings, intervals);
    let svg = chart.svg().map_err(Failure::Usage)?;
    let text = match spec.file.kind {
        ChartKind::Svg => svg,
        ChartKind::Html => html(&chart.title, &svg),
    };
    write_atomically(&spec.file.path, text.as_bytes()).map_err(Failure::Usage)?;
    Ok(chart.drawn(&spec.file.path))
}

/// One line of the chart: its name (none without a series column) and its readings as epoch
/// milliseconds and values, in time order.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    /// The series' name, as the legend shows it.
    name: Option<String>,
    /// `(epoch milliseconds, value)`, in time order.
    points: Vec<(i64, f64)>,
}

/// A query's readings, as series.
#[derive(Debug, Clone, PartialEq)]
struct Readings {
    /// The value column's name: the y axis' label.
    value_name: String,
    /// The series, by name.
    series: Vec<Series>,
}

impl Readings {
    /// Reads `(ts, value[, series])` columns.
    ///
    /// # Errors
    /// When the columns are not of that shape (the message says what is expected and what
    /// the query returned), or there are more than [`MAX_SERIES`] series.
    fn from_batches(schema: &Schema, batches: &[RecordBatch]) -> anyhow::Result<Self> {
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        let shaped = match types.as_slice() {
            [ts, value] => is_time(ts) && value.is_numeric(),
            [ts, value, series] => is_time(ts) && value.is_numeric() && is_name(series),
            _ => false,
        };
        if !shaped {
            bail!(
                "--chart needs (ts, value[, series]) columns: ts a timestamp or Int64 epoch \
                 milliseconds, value a number, series a string; the query returned ({})",
                describe(schema)
            );
        }
        let named = types.len() == 3;
        let mut by_name: BTreeMap<Option<String>, Vec<(i64, f64)>> = BTreeMap::new();
        for batch in batches {
            let times = epoch_millis(batch.column(0))?;
            let values = cast(batch.column(1), &DataType::Float64)
                .context("reading the value column as numbers")?;
            let values = values.as_primitive::<Float64Type>();
            let names = if named {
                let names = cast(batch.column(2), &DataType::Utf8)
                    .context("reading the series column as text")?;
                Some(names)
            } else {
                None
            };
            let names = names.as_ref().map(|n| n.as_string::<i32>());
            for row in 0..batch.num_rows() {
                let (Some(ts), Some(value)) = (time_at(&times, row), value_at(values, row)) else {
                    continue;
                };
                let name = names.map(|n| {
                    if n.is_null(row) {
                        "NULL".to_owned()
                    } else {
                        label(n.value(row), NAME_CHARS)
                    }
                });
                by_name.entry(name).or_default().push((ts, value));
            }
        }
        if by_name.len() > MAX_SERIES {
            bail!(
                "--chart draws at most {MAX_SERIES} series, one colour each, and the query \
                 returned {}: filter to fewer (e.g. WHERE name IN (…)) or chart them in turns",
                by_name.len()
            );
        }
        let series = by_name
            .into_iter()
            .map(|(name, mut points)| {
                points.sort_by_key(|&(ts, _)| ts);
                Series { name, points }
            })
            .collect();
        Ok(Self {
            value_name: label(schema.field(1).name(), NAME_CHARS),
            series,
        })
    }

    /// The readings that can be drawn.
    fn len(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }

    /// The first and last time of any series, if there is one.
    fn span(&self) -> Option<(i64, i64)> {
        let times = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let first = times.clone().min()?;
        Some((first, times.max()?))
    }
}

/// A row's time, if it has one that a date axis can show.
fn time_at(times: &Int64Array, row: usize) -> Option<i64> {
    let ms = times.is_valid(row).then(|| times.value(row))?;
    at(ms).map(|_| ms)
}

/// A row's value, if it has a finite one.
fn value_at(values: &Float64Array, row: usize) -> Option<f64> {
    let value = values.is_valid(row).then(|| values.value(row))?;
    value.is_finite().then_some(value)
}

/// An alert interval to shade: from `start` to `end` (open: to the right edge), in a series'
/// colour if it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval {
    /// When the alert was raised, in epoch milliseconds.
    start: i64,
    /// When it cleared; none while it is open.
    end: Option<i64>,
    /// The series it belongs to, if the query said.
    series: Option<String>,
}

/// Reads `(start, end[, series])` columns; rows without a start are left out.
///
/// # Errors
/// When the columns are not of that shape.
fn intervals(schema: &Schema, batches: &[RecordBatch]) -> anyhow::Result<Vec<Interval>> {
    let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
    let shaped = match types.as_slice() {
        [start, end] => is_time(start) && (is_time(end) || matches!(end, DataType::Null)),
        [start, end, series] => {
            is_time(start) && (is_time(end) || matches!(end, DataType::Null)) && is_name(series)
        }
        _ => false,
    };
    if !shaped {
        bail!(
            "--chart-alerts needs (start, end[, series]) columns: start and end timestamps or \
             Int64 epoch milliseconds, end NULL while an alert is open, series a string; the \
             query returned ({})",
            describe(schema)
        );
    }
    let mut intervals = Vec::new();
    for batch in batches {
        let starts = epoch_millis(batch.column(0))?;
        let ends = epoch_millis(batch.column(1))?;
        let names = match batch.columns().get(2) {
            Some(column) => {
                Some(cast(column, &DataType::Utf8).context("reading the series column as text")?)
            }
            None => None,
        };
        let names = names.as_ref().map(|n| n.as_string::<i32>());
        for row in 0..batch.num_rows() {
            let Some(start) = time_at(&starts, row) else {
                continue;
            };
            intervals.push(Interval {
                start,
                end: time_at(&ends, row),
                series: names
                    .filter(|n| n.is_valid(row))
                    .map(|n| label(n.value(row), NAME_CHARS)),
            });
        }
    }
    Ok(intervals)
}

/// Whether a column can be a chart's time: a timestamp of any unit, or epoch milliseconds.
fn is_time(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Timestamp(_, _) | DataType::Int64)
}

/// Whether a column can name a series: text, or an integer (a device number).
fn is_name(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_name(values),
        other => other.is_integer(),
    }
}

/// The columns of a result as `name: Type, …`, for messages.
fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time column as epoch milliseconds. Timestamps keep their time zone while they change
/// unit, so an instant stays the same instant (dropping the zone would shift it to local time).
fn epoch_millis(column: &ArrayRef) -> anyhow::Result<Int64Array> {
    match column.data_type() {
        DataType::Int64 => Ok(column.as_primitive::<Int64Type>().clone()),
        DataType::Timestamp(_, zone) => {
            let millis = cast(
                column,
                &DataType::Timestamp(TimeUnit::Millisecond, zone.clone()),
            )
            .context("reading a time column as milliseconds")?;
            Ok(millis
                .as_primitive::<TimestampMillisecondType>()
                .reinterpret_cast::<Int64Type>())
        }
        DataType::Null => Ok(Int64Array::new_null(column.len())),
        other => {
            bail!("a time column of type {other}: give a timestamp or Int64 epoch milliseconds")
        }
    }
}

/// The instant of epoch milliseconds, if a date axis can show it.
fn at(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// Text fit to be drawn: control characters (which XML cannot hold, even escaped) become
/// U+FFFD, runs of white space one space, and text longer than `max` characters ends in `…`.
/// The SVG backend escapes `<`, `&` and quotes itself.
fn label(text: &str, max: usize) -> String {
    let clean: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| {
            let unwritable = c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}';
            if unwritable { '\u{FFFD}' } else { c }
        })
        .collect();
    if clean.chars().count() > max {
        clean
            .chars()
            .take(max.saturating_sub(1))
            .chain(['…'])
            .collect()
    } else {
        clean
    }
}

/// Thins points in time order to the lowest and the highest of each of `slices` equal slices
/// of `span` (in time order), when there are more than `2 × slices` of them.
fn thin(points: &[(i64, f64)], span: (i64, i64), slices: usize) -> Vec<(i64, f64)> {
    if points.len() <= 2 * slices {
        return points.to_vec();
    }
    let width = i128::from(span.1) - i128::from(span.0) + 1;
    let slice_of = |ts: i64| (i128::from(ts) - i128::from(span.0)) * slices as i128 / width;
    let mut kept = Vec::with_capacity(2 * slices);
    for chunk in points.chunk_by(|a, b| slice_of(a.0) == slice_of(b.0)) {
        let (mut low, mut high) = (0, 0);
        for (i, point) in chunk.iter().enumerate() {
            if point.1 < chunk[low].1 {
                low = i;
            }
            if point.1 > chunk[high].1 {
                high = i;
            }
        }
        kept.push(chunk[low.min(high)]);
        if low != high {
            kept.push(chunk[low.max(high)]);
        }
    }
    kept
}

/// A chart ready to draw: title, thinned series, bands clipped to the time axis.
struct Chart {
    title: String,
    value_name: String,
    series: Vec<Series>,
    /// Readings before thinning.
    readings: usize,
    /// `(start, end, colour)` within the time axis.
    bands: Vec<(i64, i64, RGBColor)>,
    /// The time axis, in epoch milliseconds; none without readings.
    span: Option<(i64, i64)>,
}

impl Chart {
    fn new(title: String, readings: Readings, intervals: Vec<Interval>) -> Self {
        let span = readings.span().map(|(first, last)| {
            if first == last {
                // One instant: half a minute either side, so the point has an axis to sit on.
                (first.saturating_sub(30_000), last.saturating_add(30_000))
            } else {
                (first, last)
            }
        });
        let colour_of = |name: &Option<String>| {
            readings
                .series
                .iter()
                .position(|s| s.name.is_some() && &s.name == name)
                .and_then(|i| PALETTE.get(i).copied())
        };
        let bands = match span {
            None => Vec::new(),
            Some((first, last)) => intervals
                .iter()
                .filter_map(|interval| {
                    let start = interval.start.max(first);
                    let end = interval.end.unwrap_or(last).min(last);
                    let colour = colour_of(&interval.series).unwrap_or(ALERT);
                    (start <= end).then_some((start, end, colour))
                })
                .collect(),
        };
        let count = readings.len();
        let series = readings
            .series
            .into_iter()
            .map(|s| Series {
                points: span.map_or_else(Vec::new, |span| thin(&s.points, span, SLICES)),
                name: s.name,
            })
            .collect();
        Self {
            title,
            value_name: readings.value_name,
            series,
            readings: count,
            bands,
            span,
        }
    }

    fn drawn(&self, path: &Path) -> Drawn {
        Drawn {
            path: path.to_owned(),
            series: self.series.len(),
            readings: self.readings,
            points: self.series.iter().map(|s| s.points.len()).sum(),
            intervals: self.bands.len(),
        }
    }

    /// The chart as an SVG document.
    fn svg(&self) -> anyhow::Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(drawing)?;
            match self
                .span
                .and_then(|(first, last)| Some((at(first)?, at(last)?)))
            {
                Some(span) => self.draw_lines(&root, span)?,
                None => {
                    let area = root
                        .titled(&self.title, ("sans-serif", 22).into_font())
                        .map_err(drawing)?;
                    let (width, height) = area.dim_in_pixel();
                    let centre = TextStyle::from(("sans-serif", 20).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    let middle = ((width / 2) as i32, (height / 2) as i32);
                    area.draw(&Text::new(
                        "no rows: the query returned nothing to draw",
                        middle,
                        centre,
                    ))
                    .map_err(drawing)?;
                }
            }
            root.present().map_err(drawing)?;
        }
        Ok(svg)
    }

    /// Axes, bands under the lines, lines, legend.
    fn draw_lines(
        &self,
        root: &plotters::drawing::DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
        (first, last): (DateTime<Utc>, DateTime<Utc>),
    ) -> anyhow::Result<()> {
        let (low, high) = self.value_range();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 22).into_font())
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(RangedDateTime::from(first..last), low..high)
            .map_err(drawing)?;
        let format = time_format(last - first);
        let label_time = |t: &DateTime<Utc>| t.format(format).to_string();
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&label_time)
            .label_style(("sans-serif", 14).into_font())
            .axis_desc_style(("sans-serif", 16).into_font())
            .x_desc("time (UTC)")
            .y_desc(self.value_name.as_str())
            .light_line_style(BLACK.mix(0.05))
            .bold_line_style(BLACK.mix(0.15))
            .draw()
            .map_err(drawing)?;
        // An alert of minutes on an axis of months would be narrower than a pixel.
        let pixels = f64::from(chart.plotting_area().dim_in_pixel().0.max(1));
        let axis = (first.timestamp_millis(), last.timestamp_millis());
        let narrowest = ((axis.1 - axis.0) as f64 * MIN_BAND_PIXELS / pixels) as i64;
        let bands = self.bands.iter().filter_map(|&(start, end, colour)| {
            let (start, end) = widen((start, end), narrowest, axis);
            let corners = [(at(start)?, low), (at(end)?, high)];
            Some(Rectangle::new(corners, colour.mix(ALERT_OPACITY).filled()))
        });
        chart.draw_series(bands).map_err(drawing)?;
        for (series, colour) in self.series.iter().zip(PALETTE) {
            let points = series
                .points
                .iter()
                .filter_map(|&(ts, v)| Some((at(ts)?, v)));
            let line = chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(drawing)?;
            if let Some(name) = &series.name {
                line.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            }
        }
        if self.series.iter().any(|s| s.name.is_some()) {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 14).into_font())
                .draw()
                .map_err(drawing)?;
        }
        Ok(())
    }

    /// The value axis: every drawn value with a twentieth of the range free above and below.
    fn value_range(&self) -> (f64, f64) {
        let values = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let low = values.clone().fold(f64::INFINITY, f64::min);
        let high = values.fold(f64::NEG_INFINITY, f64::max);
        if !(low.is_finite() && high.is_finite()) {
            return (0.0, 1.0);
        }
        let pad = if high > low {
            (high - low) / 20.0
        } else {
            (low.abs() / 20.0).max(1.0)
        };
        (low - pad, high + pad)
    }
}

/// A band at least `narrowest` wide where the axis allows: grown to the right, or to the left
/// at the axis' end.
fn widen((start, end): (i64, i64), narrowest: i64, (first, last): (i64, i64)) -> (i64, i64) {
    let end = end.max(start.saturating_add(narrowest)).min(last);
    let start = start.min(end.saturating_sub(narrowest)).max(first);
    (start, end)
}

/// How the time axis labels its ticks: with the year over long spans, with seconds over short.
fn time_format(span: chrono::TimeDelta) -> &'static str {
    if span > chrono::TimeDelta::days(365) {
        "%Y-%m-%d"
    } else if span > chrono::TimeDelta::minutes(10) {
        "%m-%d %H:%M"
    } else {
        "%H:%M:%S"
    }
}

/// A plotters failure, said as one.
fn drawing(error: impl fmt::Display) -> anyhow::Error {
    anyhow!("drawing the chart: {error}")
}

/// A page holding the SVG inline, and nothing it would fetch.
fn html(title: &str, svg: &str) -> String {
    let title: String = title
        .chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            other => other.to_string(),
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n</head>\n<body style=\"margin: 16px; background: #fff\">\n\
         {svg}</body>\n</html>\n"
    )
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("the chart file {} has no file name", path.display()))?;
    let temporary = directory.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        bail!(
            "writing the chart {}: {error}: check that its directory exists and is writable",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use std::sync::Arc;

    use arrow::array::{
        Float32Array, Int32Array, StringArray, StringViewArray, TimestampNanosecondArray,
        TimestampSecondArray, UInt8Array,
    };
    use arrow::datatypes::Field;

    use super::*;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn render(readings: Readings, intervals: Vec<Interval>) -> String {
        Chart::new("a title".into(), readings, intervals)
            .svg()
            .unwrap()
    }

    #[test]
    fn times_of_any_unit_and_zone_are_the_same_instants() {
        // 2014-02-09T00:00:00Z, as seconds, as nanoseconds in +02:00, and as epoch ms.
        let ms = 1_391_904_000_000_i64;
        let columns: [ArrayRef; 3] = [
            Arc::new(TimestampSecondArray::from(vec![ms / 1000])),
            Arc::new(TimestampNanosecondArray::from(vec![ms * 1_000_000]).with_timezone("+02:00")),
            Arc::new(Int64Array::from(vec![ms])),
        ];
        for ts in columns {
            let b = batch(vec![
                ("ts", ts),
                ("v", Arc::new(Float32Array::from(vec![1.5]))),
            ]);
            let readings = Readings::from_batches(&b.schema(), &[b]).unwrap();
            assert_eq!(readings.series[0].points, [(ms, 1.5)]);
            assert_eq!(readings.value_name, "v");
        }
    }

    #[test]
    fn series_are_sorted_by_time_and_unusable_rows_left_out() {
        let b = batch(vec![
            (
                "ts",
                Arc::new(Int64Array::from(vec![
                    Some(3),
                    Some(1),
                    None,
                    Some(2),
                    Some(5),
                ])),
            ),
            (
                "value",
                Arc::new(Float64Array::from(vec![
                    Some(3.0),
                    Some(1.0),
                    Some(9.0),
                    Some(f64::NAN),
                    None,
                ])),
            ),
            ("s", Arc::new(UInt8Array::from(vec![7, 7, 7, 7, 8]))),
        ]);
        let readings = Readings::from_batches(&b.schema(), &[b]).unwrap();
        assert_eq!(
            readings.series,
            [Series {
                name: Some("7".into()),
                points: vec![(1, 1.0), (3, 3.0)]
            }]
        );
        assert_eq!(readings.len(), 2);
    }

    #[test]
    fn wrong_shapes_say_what_is_expected_and_what_came() {
        let text = Arc::new(StringArray::from(vec!["x"])) as ArrayRef;
        let number = Arc::new(Int64Array::from(vec![1])) as ArrayRef;
        for columns in [
            vec![("a", text.clone()), ("b", number.clone())],
            vec![("ts", number.clone())],
            vec![
                ("ts", number.clone()),
                ("v", number.clone()),
                ("s", number.clone()),
                ("x", number.clone()),
            ],
            vec![("ts", number.clone()), ("v", text.clone())],
        ] {
            let b = batch(columns);
            let error = Readings::from_batches(&b.schema(), std::slice::from_ref(&b))
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("--chart needs (ts, value[, series]) columns"),
                "{error}"
            );
            assert!(
                error.contains(&format!("({})", describe(&b.schema()))),
                "{error}"
            );
        }
        let b = batch(vec![("a", text.clone()), ("b", number.clone())]);
        let error = Readings::from_batches(&b.schema(), &[b])
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("the query returned (a: Utf8, b: Int64)"),
            "{error}"
        );
        let b = batch(vec![("start", text), ("end", number)]);
        let error = intervals(&b.schema(), &[b]).unwrap_err().to_string();
        assert!(
            error.starts_with("--chart-alerts needs (start, end[, series])"),
            "{error}"
        );
    }

    #[test]
    fn more_series_than_colours_are_refused() {
        let n = MAX_SERIES as i64 + 1;
        let b = batch(vec![
            ("ts", Arc::new(Int64Array::from_iter_values(0..n))),
            ("v", Arc::new(Int32Array::from_iter_values(0..n as i32))),
            ("s", Arc::new(Int64Array::from_iter_values(0..n))),
        ]);
        let error = Readings::from_batches(&b.schema(), &[b])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("at most {MAX_SERIES} series")),
            "{error}"
        );
    }

    #[test]
    fn thinning_keeps_each_slices_extremes_in_time_order() {
        let points: Vec<(i64, f64)> = (0..100_000)
            .map(|i| (i, ((i * 7919) % 1000) as f64))
            .collect();
        let thinned = thin(&points, (0, 99_999), SLICES);
        assert!(thinned.len() <= MAX_POINTS, "{}", thinned.len());
        assert!(
            thinned.len() > SLICES,
            "both extremes of most slices: {}",
            thinned.len()
        );
        assert!(thinned.windows(2).all(|w| w[0].0 < w[1].0), "time order");
        // Every slice of 50 readings holds a 0 and a 999 nowhere; check one slice exactly.
        let slice: Vec<&(i64, f64)> = points.iter().filter(|p| p.0 < 50).collect();
        let low = slice.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let high = slice.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let kept: Vec<f64> = thinned.iter().filter(|p| p.0 < 50).map(|p| p.1).collect();
        assert_eq!(kept.len(), 2);
        assert!(kept.contains(&low) && kept.contains(&high), "{kept:?}");
        // Short series are left alone.
        assert_eq!(
            thin(&points[..MAX_POINTS], (0, 99_999), SLICES).len(),
            MAX_POINTS
        );
    }

    #[test]
    fn hostile_names_are_escaped_and_control_characters_replaced() {
        let hostile = "<script>alert('x')</script> & \"q\"\u{1}";
        let b = batch(vec![
            ("ts", Arc::new(Int64Array::from(vec![0, 60_000]))),
            ("v", Arc::new(Int64Array::from(vec![1, 2]))),
            ("s", Arc::new(StringViewArray::from(vec![hostile, hostile]))),
        ]);
        let readings = Readings::from_batches(&b.schema(), &[b]).unwrap();
        let svg = render(readings, Vec::new());
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains('\u{1}'));
        assert!(
            svg.contains(
                "&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt; &amp; &quot;q&quot;\u{FFFD}"
            ),
            "{svg}"
        );
    }

    #[test]
    fn an_empty_result_draws_a_chart_that_says_so() {
        let schema = Schema::new(vec![
            Field::new("ts", DataType::Int64, true),
            Field::new("v", DataType::Float64, true),
        ]);
        let readings = Readings::from_batches(&schema, &[]).unwrap();
        assert_eq!(readings.len(), 0);
        let svg = render(
            readings,
            vec![Interval {
                start: 0,
                end: None,
                series: None,
            }],
        );
        assert!(svg.contains("no rows") && svg.contains("a title"), "{svg}");
        assert!(!svg.contains("<polyline"), "{svg}");
    }

    #[test]
    fn bands_are_clipped_to_the_axis_coloured_by_series_and_drawn_under_the_lines() {
        let b = batch(vec![
            (
                "ts",
                Arc::new(Int64Array::from(vec![0, 600_000, 0, 600_000])),
            ),
            ("v", Arc::new(Int64Array::from(vec![1, 2, 3, 4]))),
            ("s", Arc::new(StringArray::from(vec!["a", "a", "b", "b"]))),
        ]);
        let readings = Readings::from_batches(&b.schema(), std::slice::from_ref(&b)).unwrap();
        let intervals = vec![
            Interval {
                start: -5_000,
                end: Some(60_000),
                series: Some("b".into()),
            },
            Interval {
                start: 300_000,
                end: None,
                series: None,
            },
            Interval {
                start: 700_000,
                end: None,
                series: None,
            }, // after the last reading
        ];
        let chart = Chart::new("t".into(), readings, intervals);
        assert_eq!(
            chart.bands,
            [(0, 60_000, PALETTE[1]), (300_000, 600_000, ALERT)]
        );
        let svg = chart.svg().unwrap();
        let band = svg.find(r##"opacity="0.18" fill="#F28E2B""##).unwrap();
        let red = svg.find(r##"opacity="0.18" fill="#D62728""##).unwrap();
        let first_line = svg
            .find("<polyline fill=\"none\" opacity=\"1\" stroke=\"#4E79A7\"")
            .unwrap();
        assert!(
            band < first_line && red < first_line,
            "bands under the lines"
        );

        // A one-instant alert still shows, MIN_BAND_PIXELS wide.
        let instant = Interval {
            start: 450_000,
            end: Some(450_000),
            series: None,
        };
        let readings = Readings::from_batches(&b.schema(), &[b]).unwrap();
        let one = Chart::new("t".into(), readings, vec![instant])
            .svg()
            .unwrap();
        let rect = one
            .lines()
            .find(|l| l.contains(r#"opacity="0.18""#))
            .unwrap();
        let width = rect
            .split("width=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(width.parse::<i32>().unwrap() >= 2, "{rect}");
    }

    #[test]
    fn short_bands_are_widened_within_the_axis() {
        assert_eq!(widen((50, 50), 10, (0, 100)), (50, 60));
        assert_eq!(
            widen((98, 99), 10, (0, 100)),
            (90, 100),
            "grown left at the end"
        );
        assert_eq!(
            widen((20, 70), 10, (0, 100)),
            (20, 70),
            "wide enough already"
        );
        assert_eq!(
            widen((0, 0), 500, (0, 100)),
            (0, 100),
            "no wider than the axis"
        );
    }

    #[test]
    fn labels_are_cleaned_and_shortened() {
        assert_eq!(
            label("SELECT ts,\n  value\tFROM t", 90),
            "SELECT ts, value FROM t"
        );
        assert_eq!(label("abcdef", 4), "abc…");
        assert_eq!(label("a\u{7}b", 9), "a\u{FFFD}b");
    }

    #[test]
    fn chart_files_are_told_by_their_extension() {
        assert_eq!(ChartFile::new("a/b.SVG").unwrap().kind, ChartKind::Svg);
        assert_eq!(ChartFile::new("b.htm").unwrap().kind, ChartKind::Html);
        for bad in ["b.png", "b", "svg"] {
            let error = ChartFile::new(bad).unwrap_err();
            assert!(error.contains(CHART_EXTENSIONS), "{error}");
        }
    }

    #[test]
    fn the_file_is_replaced_whole_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.svg");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.svg"]);
        let error = write_atomically(&dir.path().join("missing/c.svg"), b"x").unwrap_err();
        assert!(error.to_string().contains("missing/c.svg"), "{error}");
    }
}
