//! `$VAR` / `${VAR}` expansion of string values in a parsed config document.
//!
//! Expansion happens on the parsed YAML tree, never on the raw text, so a
//! variable's value can not inject YAML structure. A value that is exactly one
//! variable and whose expansion reads as a number or a boolean takes that type
//! (`cluster_grpc_port: $PORT` works); anything else stays a string.

use serde_norway::Value;

use super::error::ConfigError;

/// Looks up environment variables; injected so tests need not mutate the
/// process environment.
pub trait Env {
    /// The variable's value, or `None` when it is not set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Expands every string scalar below `value` in place. `path` names `value`
/// for error messages (empty for the document root).
pub fn expand_tree(value: &mut Value, path: &str, env: &dyn Env) -> Result<(), ConfigError> {
    match value {
        Value::String(text) => {
            let expanded = expand_str(text, env).map_err(|reason| ConfigError::Invalid {
                key: path.to_owned(),
                reason,
            })?;
            if expanded != *text {
                *value = retype_scalar(text, expanded);
            }
            Ok(())
        }
        Value::Mapping(map) => {
            for (key, child) in map.iter_mut() {
                let child_path = join_path(path, &key_name(key));
                expand_tree(child, &child_path, env)?;
            }
            Ok(())
        }
        Value::Sequence(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                expand_tree(child, &format!("{path}[{index}]"), env)?;
            }
            Ok(())
        }
        Value::Tagged(tagged) => expand_tree(&mut tagged.value, path, env),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// `a.b` style path join used in every config error message.
pub fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A printable name for a mapping key.
pub fn key_name(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::Null => "~".to_owned(),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => "<complex key>".to_owned(),
    }
}

/// Expands `$NAME`, `${NAME}` and `$$` in one string. A `$` that starts no
/// variable name is kept as it is.
pub fn expand_str(input: &str, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let Some(close) = braced.find('}') else {
                return Err(format!(
                    "unterminated \"${{\" in {input:?}: close it with '}}'"
                ));
            };
            let name = &braced[..close];
            if !is_var_name(name) {
                return Err(format!(
                    "\"${{{name}}}\" is not a variable name (letters, digits and '_', not starting with a digit)"
                ));
            }
            out.push_str(&lookup(name, env)?);
            rest = &braced[close + 1..];
        } else {
            let name_len = var_name_len(after);
            if name_len == 0 {
                out.push('$');
                rest = after;
            } else {
                out.push_str(&lookup(&after[..name_len], env)?);
                rest = &after[name_len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup(name: &str, env: &dyn Env) -> Result<String, String> {
    env.var(name).ok_or_else(|| {
        format!("environment variable {name} is not set (write $$ for a literal '$')")
    })
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty() && var_name_len(name) == name.len()
}

fn var_name_len(text: &str) -> usize {
    let mut len = 0;
    for (index, ch) in text.char_indices() {
        let allowed = ch == '_' || ch.is_ascii_alphabetic() || (index > 0 && ch.is_ascii_digit());
        if !allowed {
            break;
        }
        len = index + ch.len_utf8();
    }
    len
}

/// A value written as exactly one variable may become a number or a bool.
fn retype_scalar(original: &str, expanded: String) -> Value {
    let whole_variable = original.starts_with('$')
        && !original.starts_with("$$")
        && (is_var_name(&original[1..])
            || (original.starts_with("${")
                && original.ends_with('}')
                && is_var_name(&original[2..original.len() - 1])));
    if whole_variable {
        if let Ok(parsed @ (Value::Number(_) | Value::Bool(_))) =
            serde_norway::from_str::<Value>(&expanded)
        {
            return parsed;
        }
    }
    Value::String(expanded)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn expands_plain_and_braced_names() {
        let env = env(&[("HOST", "db"), ("PORT", "5432")]);
        assert_eq!(
            expand_str("postgres://$HOST:${PORT}/relay", &env),
            Ok("postgres://db:5432/relay".to_owned())
        );
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        let env = env(&[("A", "x")]);
        assert_eq!(expand_str("pa$$word$A", &env), Ok("pa$wordx".to_owned()));
        assert_eq!(expand_str("$$A", &env), Ok("$A".to_owned()));
    }

    #[test]
    fn dollar_without_a_name_is_kept() {
        let env = env(&[]);
        assert_eq!(
            expand_str("cost $5 and $", &env),
            Ok("cost $5 and $".to_owned())
        );
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        let env = env(&[]);
        let err = expand_str("$POSTGRES_DSN", &env).err().unwrap_or_default();
        assert!(err.contains("POSTGRES_DSN is not set"), "{err}");
    }

    #[test]
    fn unterminated_brace_is_an_error() {
        let env = env(&[("A", "x")]);
        assert!(expand_str("${A", &env).is_err());
        assert!(expand_str("${}", &env).is_err());
    }

    #[test]
    fn whole_variable_numbers_become_numbers() -> Result<(), Box<dyn std::error::Error>> {
        let env = env(&[("PORT", "50056"), ("NAME", "relay")]);
        let mut doc: Value = serde_norway::from_str("a: $PORT\nb: ${PORT}x\nc: $NAME\n")?;
        expand_tree(&mut doc, "", &env)?;
        assert_eq!(doc["a"], Value::Number(50056.into()));
        assert_eq!(doc["b"], Value::String("50056x".into()));
        assert_eq!(doc["c"], Value::String("relay".into()));
        Ok(())
    }

    #[test]
    fn error_names_the_key_path() -> Result<(), Box<dyn std::error::Error>> {
        let mut doc: Value = serde_norway::from_str("postgres:\n  dsn: $MISSING\n")?;
        let err = expand_tree(&mut doc, "", &env(&[])).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("postgres.dsn"), "{text}");
        assert!(text.contains("MISSING"), "{text}");
        Ok(())
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Any text, `$`, braces and all: an answer, never a panic.
            #[test]
            fn expansion_never_panics(input in "[a-zA-Z0-9_${}é .:/-]{0,40}", other in any::<String>()) {
                let env = env(&[("A", "x"), ("PORT", "1"), ("_B2", "$A")]);
                let _ = expand_str(&input, &env);
                let _ = expand_str(&other, &env);
                let mut doc = Value::String(input);
                let _ = expand_tree(&mut doc, "key", &env);
            }

            /// Doubling every `$` quotes any text: it expands back to itself.
            #[test]
            fn doubled_dollars_round_trip(text in any::<String>()) {
                let quoted = text.replace('$', "$$");
                prop_assert_eq!(expand_str(&quoted, &env(&[])), Ok(text));
            }

            /// A value is inserted as it is, never expanded again.
            #[test]
            fn values_are_not_expanded_twice(
                before in "[a-z :/]{0,10}",
                value in any::<String>(),
                after in "[ :/][a-z]{0,10}",
            ) {
                let env = env(&[("V", value.as_str())]);
                let expected = format!("{before}{value}{after}");
                prop_assert_eq!(expand_str(&format!("{before}${{V}}{after}"), &env), Ok(expected.clone()));
                prop_assert_eq!(expand_str(&format!("{before}$V{after}"), &env), Ok(expected));
            }
        }
    }
}
