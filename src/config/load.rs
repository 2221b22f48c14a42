//! Reading a config file: YAML parse, shape check, `$VAR` expansion, the
//! pod's environment overrides, typed decoding with key paths, validation.

use std::path::Path;

use serde_norway::{Mapping, Value};

use super::error::ConfigError;
use super::expand::{expand_tree, Env};
use super::file::FileConfig;
use super::model::Config;
use super::validate::validate;

/// Environment variables the deployment guide's pod sets, and the keys they
/// override.
pub const ENV_OVERRIDES: [(&str, [&str; 2]); 4] = [
    ("AEGIS_ROLE", ["cluster", "role"]),
    ("KEYCLOAK_ENDPOINT", ["keycloak", "endpoint"]),
    ("OPENBAO_ENDPOINT", ["openbao", "endpoint"]),
    ("POSTGRES_DSN", ["postgres", "dsn"]),
];

/// Reads and validates a config file.
pub fn load_file(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, env)
}

/// Parses and validates config text.
pub fn parse_str(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    let mut doc: Value = serde_norway::from_str(text).map_err(|err| ConfigError::Syntax {
        message: err.to_string(),
    })?;
    let Value::Mapping(top) = &doc else {
        let reason = if doc.is_null() {
            "the file is empty; see deploy/aegis-config.yaml for an example"
        } else {
            "expected a mapping with cluster, keycloak, openbao, postgres and relay blocks"
        };
        return Err(ConfigError::invalid("(top level)", reason));
    };
    if ["apiVersion", "kind", "spec"]
        .iter()
        .any(|key| top.contains_key(*key))
    {
        return Err(ConfigError::NodeConfigShape);
    }
    expand_tree(&mut doc, "", env)?;
    apply_env_overrides(&mut doc, env)?;
    let file: FileConfig = serde_path_to_error::deserialize(doc).map_err(|err| {
        let key = err.path().to_string();
        ConfigError::invalid(
            if key == "." {
                "(top level)".to_owned()
            } else {
                key
            },
            err.into_inner().to_string(),
        )
    })?;
    validate(file, env)
}

/// Sets the keys named by [`ENV_OVERRIDES`] from the environment when the
/// variable is set and not empty.
fn apply_env_overrides(doc: &mut Value, env: &dyn Env) -> Result<(), ConfigError> {
    for (var, [block, key]) in ENV_OVERRIDES {
        let Some(value) = env.var(var).filter(|value| !value.is_empty()) else {
            continue;
        };
        let Value::Mapping(top) = doc else {
            return Ok(());
        };
        let section = top
            .entry(Value::String(block.to_owned()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if section.is_null() {
            *section = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(section) = section else {
            return Err(ConfigError::invalid(
                block,
                format!("expected a mapping (so that {var} can set {block}.{key})"),
            ));
        };
        section.insert(Value::String(key.to_owned()), Value::String(value));
    }
    Ok(())
}
