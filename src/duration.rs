//! Durations in configuration files, written as people write them (`30s`, `10m`, `1h`): the
//! one serde helper the client's and the gateway's files share. Parsed while the scalar is
//! read, so a bad value is reported at its own line and column.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration (`deserialize_with = "crate::duration::required"`).
pub(crate) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(Text)
}

/// An optional duration (`deserialize_with = "crate::duration::optional"`, with
/// `#[serde(default)]`).
pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Wrapped(Duration);
    impl<'de> Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            required(d).map(Wrapped)
        }
    }
    Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
}

struct Text;

impl serde::de::Visitor<'_> for Text {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration like 30m or 1h")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        humantime::parse_duration(text)
            .map_err(|e| E::custom(format!("{text:?} is not a duration like 30m or 1h: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        #[serde(deserialize_with = "required")]
        every: Duration,
        #[serde(default, deserialize_with = "optional")]
        within: Option<Duration>,
    }

    #[test]
    fn durations_read_as_written_and_a_bad_one_is_located() {
        let file: File = serde_norway::from_str("every: 90s\nwithin: 1h 30m\n").expect("parse");
        assert_eq!(file.every, Duration::from_secs(90));
        assert_eq!(file.within, Some(Duration::from_secs(5400)));
        let file: File = serde_norway::from_str("every: 5m\n").expect("parse");
        assert_eq!(file.within, None);
        let err = serde_norway::from_str::<File>("every: 5m\nwithin: soon\n")
            .expect_err("a bad duration")
            .to_string();
        assert!(
            err.contains("\"soon\" is not a duration like 30m or 1h"),
            "{err}"
        );
        assert!(err.contains("line 2"), "{err}");
    }
}
