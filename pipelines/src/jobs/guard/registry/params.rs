//! Parameter tables: `key=value` pairs from the command line, or a TOML table from a job file,
//! read into a serde struct with messages that name the key and the value written.
//!
//! A value given on the command line is text until the struct's field says what it is, so
//! `name=123` stays a name while `window=123` is a number, and `registry=a|b` is a list. The
//! guards' parameters (`--guard KIND:…`, `[guard.KIND]`) and the archaeology job's tables
//! (`[sequences]`, …) are read this way.

use std::fmt;
use std::time::Duration;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

/// A parameter that could not be read or is out of range; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(String);

impl ParamError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl de::Error for ParamError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self(message.to_string())
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self(format!(
            "unknown parameter `{field}`: use {}",
            and_list(expected)
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        Self(format!("needs {field}=…"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self(format!("{field} is given twice"))
    }
}

/// `a, b and c`, for messages.
pub fn and_list(items: &[&str]) -> String {
    match items {
        [] => "none".to_owned(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A parameter's value as written.
#[derive(Clone, Debug, PartialEq)]
enum Written<'a> {
    /// After `key=` on the command line: read as whatever the field is.
    Text(&'a str),
    /// In a TOML table.
    Toml(toml::Value),
}

/// Parameters as written, with where they were written for messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Table<'a> {
    /// Put before each key in messages: `""` for flags, `"entanglements."` in a job file.
    prefix: String,
    entries: Vec<(String, Written<'a>)>,
}

impl<'a> Table<'a> {
    /// `key=value` pairs as `--guard KIND:key=value,…` gives them.
    pub fn from_pairs(pairs: &[(&'a str, &'a str)]) -> Self {
        Self {
            prefix: String::new(),
            entries: pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), Written::Text(value)))
                .collect(),
        }
    }

    /// A TOML table; messages put `prefix` before each key (`"sequences."`, or `""` when the
    /// caller names the table itself).
    pub fn from_toml(prefix: &str, table: toml::Table) -> Self {
        Self {
            prefix: prefix.to_owned(),
            entries: table
                .into_iter()
                .map(|(key, value)| (key, Written::Toml(value)))
                .collect(),
        }
    }

    /// The parameters read into `T`, which says what each one is.
    pub fn read<T: DeserializeOwned>(self) -> Result<T, ParamError> {
        let prefix = self.prefix;
        let entries = self.entries.into_iter().map(|(key, written)| {
            let shown = match &written {
                Written::Text(text) => format!("{prefix}{key}={text}"),
                Written::Toml(value) => format!("{prefix}{key} = {}", toml_text(value)),
            };
            (key, Param { shown, written })
        });
        T::deserialize(MapDeserializer::new(entries))
    }
}

/// A TOML value as it is written, for messages.
fn toml_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_text).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(_) => "{…}".to_owned(),
    }
}

/// One parameter: its value, and how it was written for messages.
struct Param<'a> {
    shown: String,
    written: Written<'a>,
}

impl Param<'_> {
    /// An error about this parameter: `window=abc: not a whole number`.
    fn error(&self, problem: impl fmt::Display) -> ParamError {
        ParamError(format!("{}: {problem}", self.shown))
    }

    fn whole(&self) -> Result<i128, ParamError> {
        let whole = match &self.written {
            Written::Text(text) => text.trim().replace('_', "").parse::<i128>().ok(),
            Written::Toml(toml::Value::Integer(i)) => Some(i128::from(*i)),
            Written::Toml(_) => None,
        };
        whole.ok_or_else(|| self.error("not a whole number"))
    }

    fn number(&self) -> Result<f64, ParamError> {
        let number = match &self.written {
            Written::Text(text) => text.trim().parse::<f64>().ok(),
            Written::Toml(toml::Value::Float(f)) => Some(*f),
            Written::Toml(toml::Value::Integer(i)) => Some(*i as f64),
            Written::Toml(_) => None,
        };
        number
            .filter(|n| n.is_finite())
            .ok_or_else(|| self.error("not a number"))
    }
}

impl<'de> IntoDeserializer<'de, ParamError> for Param<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// Reads a whole number of the visitor's type.
macro_rules! whole {
    ($($method:ident => $visit:ident as $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
            let whole = self.whole()?;
            match <$ty>::try_from(whole) {
                Ok(value) => visitor.$visit::<ParamError>(value).map_err(|e| self.error(e)),
                Err(_) if whole < 0 => Err(self.error("must not be negative")),
                Err(_) => Err(self.error("is too large")),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Param<'de> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        let shown = self.shown;
        match self.written {
            Written::Text(text) => visitor
                .visit_borrowed_str::<ParamError>(text)
                .map_err(|e| ParamError(format!("{shown}: {e}"))),
            Written::Toml(value) => value
                .deserialize_any(visitor)
                .map_err(|e| ParamError(format!("{shown}: {}", e.message()))),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        let flag = match &self.written {
            Written::Text(text) => text.trim().parse::<bool>().ok(),
            Written::Toml(toml::Value::Boolean(b)) => Some(*b),
            Written::Toml(_) => None,
        };
        let flag = flag.ok_or_else(|| self.error("not true or false"))?;
        visitor
            .visit_bool::<ParamError>(flag)
            .map_err(|e| self.error(e))
    }

    whole! {
        deserialize_u8 => visit_u64 as u64,
        deserialize_u16 => visit_u64 as u64,
        deserialize_u32 => visit_u64 as u64,
        deserialize_u64 => visit_u64 as u64,
        deserialize_i8 => visit_i64 as i64,
        deserialize_i16 => visit_i64 as i64,
        deserialize_i32 => visit_i64 as i64,
        deserialize_i64 => visit_i64 as i64,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        let number = self.number()?;
        visitor
            .visit_f64::<ParamError>(number)
            .map_err(|e| self.error(e))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        let shown = self.shown;
        let read = match self.written {
            Written::Text(text) => visitor.visit_borrowed_str::<ParamError>(text),
            Written::Toml(toml::Value::String(s)) => visitor.visit_string::<ParamError>(s),
            Written::Toml(_) => {
                return Err(ParamError(format!(
                    "{shown}: not text (write it in quotes)"
                )));
            }
        };
        read.map_err(|e| ParamError(format!("{shown}: {e}")))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        visitor.visit_newtype_struct(self)
    }

    /// A list: `a|b|c` on the command line, an array in TOML.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        let shown = self.shown;
        let items: Vec<Param<'de>> = match self.written {
            Written::Text(text) => text
                .split('|')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Param {
                    shown: shown.clone(),
                    written: Written::Text(item),
                })
                .collect(),
            Written::Toml(toml::Value::Array(items)) => items
                .into_iter()
                .map(|item| Param {
                    shown: shown.clone(),
                    written: Written::Toml(item),
                })
                .collect(),
            Written::Toml(_) => return Err(ParamError(format!("{shown}: not a list"))),
        };
        let mut seq = SeqDeserializer::new(items.into_iter());
        let value = visitor.visit_seq(&mut seq)?;
        seq.end()?;
        Ok(value)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        let shown = self.shown;
        match self.written {
            Written::Text(text) => visitor
                .visit_enum(text.into_deserializer())
                .map_err(|e: ParamError| ParamError(format!("{shown}: {e}"))),
            Written::Toml(value) => value
                .deserialize_enum(name, variants, visitor)
                .map_err(|e| ParamError(format!("{shown}: {}", e.message()))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier
    }
}

/// Durations written as text (`30s`, `1m`, `1d`): `#[serde(with = "duration")]`.
pub mod duration {
    use super::*;

    /// Writes the duration as `humantime` does (`1m 30s`).
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Reads a duration such as `30s`, `1m` or `1d`.
    pub fn deserialize<'de, D: de::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(DurationText)
    }

    /// Parses the text as it is read, so that the reader's message names the key.
    struct DurationText;

    impl Visitor<'_> for DurationText {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as 30s, 1m or 1d")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text.trim()).map_err(|e| {
                E::custom(format_args!(
                    "not a duration ({e}); write e.g. 30s, 1m or 1d"
                ))
            })
        }
    }
}

/// Optional durations written as text: `#[serde(default, with = "duration_option")]`.
pub mod duration_option {
    use super::*;

    /// Writes the duration as `humantime` does, or nothing.
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    /// Reads a duration such as `30s`, `1m` or `1d`.
    pub fn deserialize<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        window: usize,
        threshold: Option<f64>,
        name: Option<String>,
        #[serde(default)]
        registry: Vec<String>,
        #[serde(default, with = "duration_option")]
        period: Option<Duration>,
    }

    fn flags(pairs: &[(&str, &str)]) -> Result<Sample, String> {
        Table::from_pairs(pairs).read().map_err(|e| e.to_string())
    }

    #[test]
    fn flags_are_read_as_the_fields_say() {
        let sample = flags(&[
            ("window", "60"),
            ("threshold", "6"),
            ("name", "123"),
            ("registry", "veh-*|ground-1"),
            ("period", "1d"),
        ])
        .unwrap();
        assert_eq!(sample.window, 60);
        assert_eq!(sample.threshold, Some(6.0));
        assert_eq!(sample.name.as_deref(), Some("123"));
        assert_eq!(sample.registry, ["veh-*", "ground-1"]);
        assert_eq!(sample.period, Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn messages_name_the_key_and_the_value() {
        let err = flags(&[("window", "abc")]).unwrap_err();
        assert_eq!(err, "window=abc: not a whole number");
        let err = flags(&[("window", "-5")]).unwrap_err();
        assert_eq!(err, "window=-5: must not be negative");
        let err = flags(&[("window", "5"), ("threshold", "inf")]).unwrap_err();
        assert_eq!(err, "threshold=inf: not a number");
        let err = flags(&[("windw", "5")]).unwrap_err();
        assert!(
            err.starts_with("unknown parameter `windw`: use window, "),
            "{err}"
        );
        let err = flags(&[("threshold", "5")]).unwrap_err();
        assert_eq!(err, "needs window=…");
        let err = flags(&[("window", "5"), ("period", "soon")]).unwrap_err();
        assert!(err.starts_with("period=soon: not a duration"), "{err}");

        let table: toml::Table = toml::from_str("window = -5").unwrap();
        let err = Table::from_toml("guard.zscore.", table)
            .read::<Sample>()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "guard.zscore.window = -5: must not be negative");
        let table: toml::Table = toml::from_str("window = 5\nname = 7").unwrap();
        let err = Table::from_toml("t.", table)
            .read::<Sample>()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "t.name = 7: not text (write it in quotes)");
    }
}
