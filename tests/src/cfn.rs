//! `template.yaml` read as CloudFormation reads it: the short-form tags become the functions they
//! stand for (`!Ref X` → `{"Ref": "X"}`, `!Sub s` → `{"Fn::Sub": s}`, `!GetAtt A.B` →
//! `{"Fn::GetAtt": ["A", "B"]}`), so tests can see which function a value uses. (A plain YAML
//! loader drops the tags and keeps only their operands.)

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Parses CloudFormation YAML into JSON values.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, false)
        .map_err(|e| e.to_string())?;
    builder.error.map_or_else(
        || builder.done.ok_or_else(|| "empty document".to_string()),
        Err,
    )
}

/// Parses the repository's `template.yaml`.
pub fn template() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let text = std::fs::read_to_string(&path).expect("template.yaml");
    parse(&text).unwrap_or_else(|e| panic!("template.yaml: {e}"))
}

/// A node under construction, with the tag it carried.
enum Open {
    Seq(Vec<Value>, Option<Tag>),
    Map(Map<String, Value>, Option<String>, Option<Tag>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    done: Option<Value>,
    error: Option<String>,
}

/// The function a short-form tag names, applied to its operand.
fn tagged(tag: Option<Tag>, value: Value) -> Value {
    let Some(tag) = tag.filter(|t| t.handle == "!") else {
        return value;
    };
    let (name, value) = match tag.suffix.as_str() {
        "Ref" | "Condition" => (tag.suffix.clone(), value),
        "GetAtt" => {
            let value = match value {
                Value::String(s) => match s.split_once('.') {
                    Some((resource, attribute)) => {
                        Value::Array(vec![resource.into(), attribute.into()])
                    }
                    None => Value::String(s),
                },
                other => other,
            };
            ("Fn::GetAtt".to_string(), value)
        }
        other => (format!("Fn::{other}"), value),
    };
    Value::Object(Map::from_iter([(name, value)]))
}

/// A plain scalar typed as YAML's core schema does; quoted scalars stay strings.
fn scalar(text: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match text.as_str() {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        "null" | "Null" | "NULL" | "~" | "" => return Value::Null,
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    if text.contains('.')
        && let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64)
    {
        return Value::Number(n);
    }
    Value::String(text)
}

impl Builder {
    fn push(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => self.done = Some(value),
            Some(Open::Seq(items, _)) => items.push(value),
            Some(Open::Map(map, key, _)) => match key.take() {
                None => match value {
                    Value::String(k) => *key = Some(k),
                    other => *key = Some(other.to_string()),
                },
                Some(k) => {
                    if map.insert(k.clone(), value).is_some() {
                        self.error = Some(format!("duplicate key {k}"));
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, _mark: Marker) {
        match event {
            Event::Scalar(text, style, _, tag) => {
                let value = scalar(text, style);
                // A tag on a scalar: `!Ref X`; its operand is a string even when it looks
                // like a number.
                let value = match (&tag, value) {
                    (Some(_), Value::Number(n)) => Value::String(n.to_string()),
                    (_, v) => v,
                };
                self.push(tagged(tag, value));
            }
            Event::SequenceStart(_, tag) => self.stack.push(Open::Seq(Vec::new(), tag)),
            Event::MappingStart(_, tag) => self.stack.push(Open::Map(Map::new(), None, tag)),
            Event::SequenceEnd => {
                if let Some(Open::Seq(items, tag)) = self.stack.pop() {
                    self.push(tagged(tag, Value::Array(items)));
                }
            }
            Event::MappingEnd => {
                if let Some(Open::Map(map, _, tag)) = self.stack.pop() {
                    self.push(tagged(tag, Value::Object(map)));
                }
            }
            Event::Alias(_) => self.error = Some("YAML aliases are not CloudFormation".into()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_forms_become_the_functions_they_stand_for() {
        let v = parse(
            "a: !Ref X\nb: !GetAtt T.Arn\nc: !If [C, !Sub '${A}-x', !Ref AWS::NoValue]\nd: 0\ne: '0'\nf: !Not\n  - !Equals [!Ref P, \"\"]\n",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({
                "a": {"Ref": "X"},
                "b": {"Fn::GetAtt": ["T", "Arn"]},
                "c": {"Fn::If": ["C", {"Fn::Sub": "${A}-x"}, {"Ref": "AWS::NoValue"}]},
                "d": 0,
                "e": "0",
                "f": {"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]},
            })
        );
    }
}
