//! Column types read from a remote catalogue, mapped through an allowlist before any reaches
//! SQL.
//!
//! `vigil-sync --restore` creates local tables from the remote's columns. The remote's type
//! text is whatever its catalogue says (a SQLite declared type is free text; a hostile or
//! broken server may say anything), so it is never written into a statement: it is parsed
//! into a [`ColumnType`], whose canonical spelling is what the statement gets. Lengths,
//! precisions and scales are checked numbers, printed back by vigil.

/// The longest `varchar(n)` / `character(n)` PostgreSQL allows.
const MAX_LENGTH: u32 = 10_485_760;

/// The greatest `numeric(p)` precision PostgreSQL allows.
const MAX_PRECISION: u32 = 1000;

/// A column type `--restore` knows, in canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `smallint` (also `int2`, `smallserial`).
    SmallInt,
    /// `integer` (also `int`, `int4`, `serial`).
    Integer,
    /// `bigint` (also `int8`, `bigserial`).
    BigInt,
    /// `numeric` / `decimal`, with precision and scale when given.
    Numeric(Option<(u32, Option<u32>)>),
    /// `real` (also `float4`, `float(1..24)`).
    Real,
    /// `double precision` (also `float8`, `float`, `float(25..53)`).
    Double,
    /// `text`.
    Text,
    /// `varchar` / `character varying`, with its length when given.
    Varchar(Option<u32>),
    /// `character(n)` / `char(n)`; without a length (as information_schema reports it) `text`,
    /// so that a restore does not cut values to PostgreSQL's default `character(1)`.
    Char(Option<u32>),
    /// `boolean`.
    Boolean,
    /// `timestamp without time zone`, with its fractional digits when given.
    Timestamp(Option<u32>),
    /// `timestamp with time zone`, with its fractional digits when given.
    TimestampTz(Option<u32>),
    /// `date`.
    Date,
    /// `time without time zone`, with its fractional digits when given.
    Time(Option<u32>),
    /// `time with time zone`, with its fractional digits when given.
    TimeTz(Option<u32>),
    /// `interval`.
    Interval,
    /// `bytea` (SQLite's `blob` too).
    Bytea,
    /// `json`.
    Json,
    /// `jsonb`.
    Jsonb,
    /// `uuid`.
    Uuid,
    /// information_schema's `ARRAY` and `USER-DEFINED` (enums, domains): it names no element
    /// or underlying type, so the column is restored as `text`, which takes the JSON text the
    /// rows carry.
    Opaque,
}

impl ColumnType {
    /// Parses a catalogue's type text: case and spacing as any catalogue writes them, one
    /// parenthesised list of numbers at most. Anything else is `None`.
    pub fn parse(text: &str) -> Option<ColumnType> {
        let lower = text.trim().to_ascii_lowercase();
        let (name, args) = match lower.split_once('(') {
            None => (words(&lower), Vec::new()),
            Some((before, rest)) => {
                let (inside, after) = rest.split_once(')')?;
                let args = inside
                    .split(',')
                    .map(|arg| {
                        let arg = arg.trim();
                        // Digits only, few enough to fit: no sign, no expression.
                        (!arg.is_empty()
                            && arg.len() <= 8
                            && arg.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| arg.parse::<u32>().ok())
                        .flatten()
                    })
                    .collect::<Option<Vec<u32>>>()?;
                (
                    format!("{} {}", words(before), words(after))
                        .trim()
                        .to_owned(),
                    args,
                )
            }
        };
        let length = |args: &[u32]| match args {
            [] => Some(None),
            [n] if (1..=MAX_LENGTH).contains(n) => Some(Some(*n)),
            _ => None,
        };
        let fraction = |args: &[u32]| match args {
            [] => Some(None),
            [p] if *p <= 6 => Some(Some(*p)),
            _ => None,
        };
        let plain = |kind: ColumnType| args.is_empty().then_some(kind);
        match name.as_str() {
            "smallint" | "int2" | "smallserial" | "serial2" => plain(ColumnType::SmallInt),
            "integer" | "int" | "int4" | "serial" | "serial4" => plain(ColumnType::Integer),
            "bigint" | "int8" | "bigserial" | "serial8" => plain(ColumnType::BigInt),
            "numeric" | "decimal" => match args.as_slice() {
                [] => Some(ColumnType::Numeric(None)),
                [p] if (1..=MAX_PRECISION).contains(p) => {
                    Some(ColumnType::Numeric(Some((*p, None))))
                }
                [p, s] if (1..=MAX_PRECISION).contains(p) && s <= p => {
                    Some(ColumnType::Numeric(Some((*p, Some(*s)))))
                }
                _ => None,
            },
            "real" | "float4" => plain(ColumnType::Real),
            "double precision" | "float8" | "double" => plain(ColumnType::Double),
            "float" => match args.as_slice() {
                [] => Some(ColumnType::Double),
                [p] if (1..=24).contains(p) => Some(ColumnType::Real),
                [p] if (25..=53).contains(p) => Some(ColumnType::Double),
                _ => None,
            },
            "text" => plain(ColumnType::Text),
            "character varying" | "varchar" => length(&args).map(ColumnType::Varchar),
            "character" | "char" | "bpchar" => length(&args).map(ColumnType::Char),
            "boolean" | "bool" => plain(ColumnType::Boolean),
            "timestamp" | "timestamp without time zone" => {
                fraction(&args).map(ColumnType::Timestamp)
            }
            "timestamptz" | "timestamp with time zone" => {
                fraction(&args).map(ColumnType::TimestampTz)
            }
            "date" => plain(ColumnType::Date),
            "time" | "time without time zone" => fraction(&args).map(ColumnType::Time),
            "timetz" | "time with time zone" => fraction(&args).map(ColumnType::TimeTz),
            "interval" => plain(ColumnType::Interval),
            "bytea" | "blob" => plain(ColumnType::Bytea),
            "json" => plain(ColumnType::Json),
            "jsonb" => plain(ColumnType::Jsonb),
            "uuid" => plain(ColumnType::Uuid),
            "array" | "user-defined" => plain(ColumnType::Opaque),
            _ => None,
        }
    }

    /// The type as PostgreSQL (and CockroachDB) declare it, spelled by vigil.
    pub fn postgres(self) -> String {
        let with_fraction = |name: &str, p: Option<u32>, zone: &str| match p {
            Some(p) => format!("{name}({p}) {zone}"),
            None => format!("{name} {zone}"),
        };
        match self {
            ColumnType::SmallInt => "smallint".into(),
            ColumnType::Integer => "integer".into(),
            ColumnType::BigInt => "bigint".into(),
            ColumnType::Numeric(None) => "numeric".into(),
            ColumnType::Numeric(Some((p, None))) => format!("numeric({p})"),
            ColumnType::Numeric(Some((p, Some(s)))) => format!("numeric({p},{s})"),
            ColumnType::Real => "real".into(),
            ColumnType::Double => "double precision".into(),
            ColumnType::Text | ColumnType::Char(None) | ColumnType::Opaque => "text".into(),
            ColumnType::Varchar(None) => "varchar".into(),
            ColumnType::Varchar(Some(n)) => format!("varchar({n})"),
            ColumnType::Char(Some(n)) => format!("character({n})"),
            ColumnType::Boolean => "boolean".into(),
            ColumnType::Timestamp(p) => with_fraction("timestamp", p, "without time zone"),
            ColumnType::TimestampTz(p) => with_fraction("timestamp", p, "with time zone"),
            ColumnType::Date => "date".into(),
            ColumnType::Time(p) => with_fraction("time", p, "without time zone"),
            ColumnType::TimeTz(p) => with_fraction("time", p, "with time zone"),
            ColumnType::Interval => "interval".into(),
            ColumnType::Bytea => "bytea".into(),
            ColumnType::Json => "json".into(),
            ColumnType::Jsonb => "jsonb".into(),
            ColumnType::Uuid => "uuid".into(),
        }
    }
}

/// White space runs made single spaces.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> Option<String> {
        ColumnType::parse(text).map(ColumnType::postgres)
    }

    #[test]
    fn known_types_get_canonical_spellings() {
        let cases = [
            ("integer", "integer"),
            ("INT4", "integer"),
            ("bigserial", "bigint"),
            ("smallint", "smallint"),
            ("numeric", "numeric"),
            ("NUMERIC(10, 2)", "numeric(10,2)"),
            ("decimal(7)", "numeric(7)"),
            ("double precision", "double precision"),
            ("float(10)", "real"),
            ("text", "text"),
            ("character varying", "varchar"),
            ("VARCHAR(20)", "varchar(20)"),
            ("character", "text"),
            ("char(3)", "character(3)"),
            ("boolean", "boolean"),
            ("timestamp with time zone", "timestamp with time zone"),
            (
                "timestamp(3)   WITH time zone",
                "timestamp(3) with time zone",
            ),
            ("timestamptz", "timestamp with time zone"),
            ("timestamp without time zone", "timestamp without time zone"),
            ("date", "date"),
            ("time(6)", "time(6) without time zone"),
            ("bytea", "bytea"),
            ("BLOB", "bytea"),
            ("jsonb", "jsonb"),
            ("uuid", "uuid"),
            ("ARRAY", "text"),
            ("USER-DEFINED", "text"),
        ];
        for (text, expected) in cases {
            assert_eq!(canonical(text).as_deref(), Some(expected), "{text}");
        }
    }

    #[test]
    fn hostile_and_unknown_types_are_refused() {
        for text in [
            "integer); DROP TABLE x; --",
            "integer DEFAULT 1",
            "text COLLATE \"C\"",
            "numeric(10,2)); DROP TABLE x; --",
            "numeric(10,2) CHECK (1=1)",
            "numeric(-1)",
            "numeric(2,5)",
            "numeric(1001)",
            "numeric(99999999999999999999)",
            "varchar(0)",
            "varchar(n)",
            "varchar((1))",
            "timestamp(7)",
            "integer(4)",
            "inet",
            "money",
            "datetime",
            "",
            "int\u{0}",
        ] {
            assert_eq!(canonical(text), None, "{text:?} was accepted");
        }
    }
}
