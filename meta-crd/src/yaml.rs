//! A tiny block-style YAML emitter for JSON values (enough for CRD manifests, no
//! dependency). Strings that are not obviously safe as plain scalars are written as JSON
//! strings, which YAML reads as double-quoted scalars with the same escapes.

use serde_json::Value;

/// Renders `value` as a YAML document (`---` first, newline last).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::from("---\n");
    match value {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, level: usize) {
    for (k, v) in m {
        indent(out, level);
        out.push_str(&string_text(k));
        out.push(':');
        write_value_after_key(out, v, level);
    }
}

fn write_value_after_key(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, level + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, level);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, a: &[Value], level: usize) {
    for v in a {
        indent(out, level);
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                // first key on the dash line, the rest aligned under it
                let mut first = true;
                for (k, child) in m {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, level + 2);
                    }
                    out.push_str(&string_text(k));
                    out.push(':');
                    write_value_after_key(out, child, level + 2);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, level + 2);
            }
            scalar => {
                debug_assert!(!is_block(scalar));
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s),
        Value::Object(_) => "{}".to_string(),
        Value::Array(_) => "[]".to_string(),
    }
}

/// Words YAML 1.1 or 1.2 would read as something other than a string.
const RESERVED: &[&str] = &[
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
];

fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    first.is_ascii_alphabetic()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s))
}

fn string_text(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        // A JSON string is a valid YAML double-quoted scalar.
        Value::String(s.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emits_block_yaml() {
        let v = json!({
            "apiVersion": "v1",
            "n": 3,
            "empty": {},
            "list": [],
            "yes": "no",
            "text": "a: b # c",
            "nested": {"a": [1, {"b": "x", "c": ["y"]}, [true]]},
        });
        let want = "---\n\
apiVersion: v1\n\
\"n\": 3\n\
empty: {}\n\
list: []\n\
\"yes\": \"no\"\n\
text: \"a: b # c\"\n\
nested:\n  a:\n  - 1\n  - b: x\n    c:\n    - \"y\"\n  -\n    - true\n";
        assert_eq!(to_yaml(&v), want);
    }

    #[test]
    fn quotes_ambiguous_strings() {
        for s in [
            "", "1", "1.0", "true", "Off", "-a", ".x", "a b", "é", "a\"b",
        ] {
            assert!(string_text(s).starts_with('"'), "{s:?}");
        }
        for s in ["v1", "k8s.cni.cncf.io", "net-attach-def", "a/b"] {
            assert_eq!(string_text(s), s);
        }
    }
}
