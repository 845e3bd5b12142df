//! Writing kubeconfig YAML that kubectl reads back as it was meant.
//!
//! client-go parses kubeconfig with YAML 1.1 rules, where a bare `no`, `yes`, `on`, `off`, `y` or
//! `n` is a boolean. serde_norway emits YAML 1.2 and leaves such strings unquoted, so a user's
//! `namespace: "no"` would come back as `namespace: no` and kubectl would refuse the whole file.
//! yaml-rust2's emitter quotes those strings (and numbers-as-strings, leading specials, …), so
//! the document goes through it.

use serde_norway::Value;
use yaml_rust2::YamlEmitter;
use yaml_rust2::yaml::{Hash, Yaml};

/// Why a document cannot be emitted.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The document holds a YAML tag (`!something`), which the writer does not carry over.
    #[error("the file uses a YAML tag ({0}), which this writer cannot keep")]
    Tagged(String),
    /// The emitter failed.
    #[error("cannot emit YAML: {0}")]
    Emitter(String),
}

/// Emits `value` as block-style YAML safe for YAML 1.1 readers.
pub fn to_yaml_text(value: &Value) -> Result<String, EmitError> {
    let yaml = convert(value)?;
    let mut text = String::new();
    YamlEmitter::new(&mut text)
        .dump(&yaml)
        .map_err(|e| EmitError::Emitter(format!("{e:?}")))?;
    // The emitter starts a document with `---`; kubeconfig files conventionally don't.
    let body = text.strip_prefix("---\n").unwrap_or(&text);
    let mut body = body.to_string();
    body.push('\n');
    Ok(body)
}

fn convert(value: &Value) -> Result<Yaml, EmitError> {
    Ok(match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            // u64 beyond i64 and floats keep their exact text.
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Sequence(items) => Yaml::Array(items.iter().map(convert).collect::<Result<_, _>>()?),
        Value::Mapping(map) => {
            let mut hash = Hash::new();
            for (k, v) in map {
                hash.insert(convert(k)?, convert(v)?);
            }
            Yaml::Hash(hash)
        }
        Value::Tagged(tagged) => return Err(EmitError::Tagged(tagged.tag.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_booleans_and_number_like_strings_stay_strings() {
        let doc: Value = serde_norway::from_str(
            "a: 'no'\nb: 'yes'\nc: 'on'\nd: 'off'\ne: 'y'\nf: 'N'\ng: '0755'\nh: '1.5'\ni: '~'\nj: plain\nk: 3\nl: true\nm: null\nn: \"two\\nlines\"\n",
        )
        .unwrap();
        let text = to_yaml_text(&doc).unwrap();
        for quoted in [
            "\"no\"", "\"yes\"", "\"on\"", "\"off\"", "\"y\"", "\"N\"", "\"0755\"", "\"1.5\"",
            "\"~\"",
        ] {
            assert!(text.contains(quoted), "{quoted} not quoted in:\n{text}");
        }
        assert!(text.contains("j: plain"), "{text}");
        assert!(!text.starts_with("---"), "{text}");
        let back: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn tags_are_refused_not_dropped() {
        let doc: Value = serde_norway::from_str("a: !custom x\n").unwrap();
        assert!(matches!(to_yaml_text(&doc), Err(EmitError::Tagged(_))));
    }
}
