//! `--selector`: the kubectl label selector syntax (`a=b,c!=d,e in (x,y),f notin (z),g,!h`)
//! into a `LabelSelector`, through kube's `Selector`/`Expression` (kube converts between
//! those and `LabelSelector` but does not parse text).

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Expression, Selector};

/// Parses a label selector; every requirement must hold. An empty string is refused (it
/// would select every pod; say so with a selector that means it, e.g. `app`).
pub fn parse(text: &str) -> Result<LabelSelector, String> {
    let mut exprs = Vec::new();
    for part in split_top_level(text)? {
        exprs.push(requirement(part.trim())?);
    }
    if exprs.is_empty() {
        return Err("empty selector".into());
    }
    Ok(LabelSelector::from(Selector::from_iter(exprs)))
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' in {text:?}"))?
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in {text:?}"));
    }
    parts.push(&text[start..]);
    Ok(parts.into_iter().filter(|p| !p.trim().is_empty()).collect())
}

fn requirement(part: &str) -> Result<Expression, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key_of(key, part)?));
    }
    for (op, build) in [
        (
            "!=",
            Expression::NotEqual as fn(String, String) -> Expression,
        ),
        ("==", Expression::Equal),
        ("=", Expression::Equal),
    ] {
        if let Some((key, value)) = part.split_once(op) {
            return Ok(build(key_of(key, part)?, value_of(value, part)?));
        }
    }
    if part.contains(char::is_whitespace) || part.contains('(') {
        let Some(open) = part.find('(') else {
            return Err(format!(
                "{part:?}: values go in parentheses, e.g. `env in (a,b)`"
            ));
        };
        let words: Vec<&str> = part[..open].split_whitespace().collect();
        let [key, op] = words.as_slice() else {
            return Err(format!(
                "{part:?}: expected `KEY in (V,...)` or `KEY notin (V,...)`"
            ));
        };
        let values = values_of(part[open..].trim(), part)?;
        return match *op {
            "in" => Ok(Expression::In(key_of(key, part)?, values)),
            "notin" => Ok(Expression::NotIn(key_of(key, part)?, values)),
            _ => Err(format!(
                "{part:?}: expected `in` or `notin` after the key, got {op:?}"
            )),
        };
    }
    Ok(Expression::Exists(key_of(part, part)?))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn key_of(key: &str, part: &str) -> Result<String, String> {
    let key = key.trim();
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    if !prefix_ok || !is_name(name) || name.is_empty() {
        return Err(format!("{part:?}: {key:?} is not a label key"));
    }
    Ok(key.to_string())
}

/// A label value: empty, or a name as in a key.
fn value_of(value: &str, part: &str) -> Result<String, String> {
    let value = value.trim();
    if !value.is_empty() && !is_name(value) {
        return Err(format!("{part:?}: {value:?} is not a label value"));
    }
    Ok(value.to_string())
}

fn is_name(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn values_of(list: &str, part: &str) -> Result<BTreeSet<String>, String> {
    let inner = list
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("{part:?}: values go in parentheses, e.g. `env in (a,b)`"))?;
    let values = inner
        .split(',')
        .map(|v| value_of(v, part))
        .collect::<Result<BTreeSet<_>, _>>()?;
    if values.iter().all(String::is_empty) {
        return Err(format!("{part:?}: at least one value is needed"));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    #[test]
    fn selectors_parse_into_label_selectors() {
        let cases: &[(&str, serde_json::Value)] = &[
            ("app=web", json!({"matchLabels": {"app": "web"}})),
            ("app==web", json!({"matchLabels": {"app": "web"}})),
            (
                "app=web,tier!=db",
                json!({"matchLabels": {"app": "web"},
                       "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}),
            ),
            (
                "env in (prod, staging),zone notin (a)",
                json!({"matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                    {"key": "zone", "operator": "NotIn", "values": ["a"]}]}),
            ),
            (
                "env in(prod)",
                json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}),
            ),
            (
                "app.kubernetes.io/name,!canary",
                json!({"matchExpressions": [
                    {"key": "app.kubernetes.io/name", "operator": "Exists"},
                    {"key": "canary", "operator": "DoesNotExist"}]}),
            ),
            (" app = web , ", json!({"matchLabels": {"app": "web"}})),
            ("app=", json!({"matchLabels": {"app": ""}})),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(serde_json::to_value(&got).unwrap(), *want, "{text}");
        }
    }

    #[test]
    fn bad_selectors_are_refused_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty selector"),
            ("env in (a", "unbalanced '('"),
            ("env in a,b", "values go in parentheses"),
            ("env like (a)", "expected `in` or `notin`"),
            ("env in ()", "at least one value"),
            ("-app=web", "is not a label key"),
            ("app=we b", "is not a label value"),
            ("Foo.Bar/x=y", "is not a label key"),
            ("app)=x", "unbalanced ')'"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn a_parsed_selector_selects_as_kubernetes_does() {
        let spec = api::NetworkCareSpec {
            selector: Some(parse("app=web,tier notin (db),!canary").unwrap()),
            ..Default::default()
        };
        api::validate::validate_care(&spec).unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(spec.selects("web-0", &labels(&[("app", "web"), ("tier", "edge")])));
        assert!(!spec.selects("web-0", &labels(&[("app", "web"), ("tier", "db")])));
        assert!(!spec.selects("web-0", &labels(&[("app", "web"), ("canary", "1")])));
    }
}
