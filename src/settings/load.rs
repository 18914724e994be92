//! Reading the config file and layering environment overrides on it.

use std::path::{Path, PathBuf};

use super::Settings;

/// Prefix of overrides: `DEALBRIDGE__SERVER__LISTEN=0.0.0.0:8080` sets
/// `server.listen`.
pub const ENV_PREFIX: &str = "DEALBRIDGE__";

/// A config problem, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}: {message}", file.display())]
    Syntax { file: PathBuf, message: String },
    #[error("{}: key `{key}`{}: {message}", file.display(), origin_suffix(origin))]
    Key { file: PathBuf, key: String, origin: Option<String>, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

fn origin_suffix(origin: &Option<String>) -> String {
    origin.as_ref().map(|var| format!(" (set by {var})")).unwrap_or_default()
}

/// Loads `file`, applies `DEALBRIDGE__…` overrides from `env`, and
/// deserializes the result. `env` is passed in so tests need not touch the
/// process environment.
pub fn load(file: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.into(), source })?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| ConfigError::Syntax { file: file.into(), message: e.to_string() })?;
    let mut overridden = Vec::new();
    for (var, raw) in env {
        let Some(path) = var.strip_prefix(ENV_PREFIX) else { continue };
        let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::Env { var, message: "empty key segment".into() });
        }
        set_path(&mut table, &keys, parse_env_value(&raw))
            .map_err(|message| ConfigError::Env { var: var.clone(), message })?;
        overridden.push((keys.join("."), var));
    }
    let de = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, Settings>(de).map_err(|e| {
        let key = e.path().to_string();
        let origin = overridden.iter().find(|(k, _)| key.starts_with(k.as_str())).map(|(_, var)| var.clone());
        // `message()`, not the error's display: that repeats the key as a
        // second line ("in `server.listen`"), and the key is named already.
        ConfigError::Key { file: file.into(), key, origin, message: e.into_inner().message().trim_end().to_owned() }
    })
}

/// Environment values are TOML values when they parse as one (`8080`,
/// `true`, `["a"]`), otherwise plain strings, so `0.0.0.0:8080` needs no
/// quoting.
fn parse_env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("no key")?;
    let mut cursor = table;
    for key in parents {
        let entry = cursor.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = entry.as_table_mut().ok_or_else(|| format!("`{key}` is not a table in the config file"))?;
    }
    cursor.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n[store]\nbackend = \"sqlite\"\n";

    #[test]
    fn environment_overrides_file_values() {
        let f = file(BASE);
        let env = [("DEALBRIDGE__SERVER__LISTEN".to_string(), "0.0.0.0:9999".to_string())];
        let s = load(f.path(), env).unwrap();
        assert_eq!(s.server.listen.port(), 9999);
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_file() {
        let f = file("[server]\nlisten = \"nowhere\"\n[store]\nbackend = \"sqlite\"\n");
        let err = load(f.path(), []).unwrap_err().to_string();
        assert!(err.contains("key `server.listen`"), "{err}");
        assert!(err.contains(&f.path().display().to_string()), "{err}");
    }

    #[test]
    fn a_bad_env_override_names_the_variable() {
        let f = file(BASE);
        let env = [("DEALBRIDGE__STORE__MAX_CONNECTIONS".to_string(), "lots".to_string())];
        let err = load(f.path(), env).unwrap_err().to_string();
        assert!(err.contains("store.max_connections") && err.contains("DEALBRIDGE__STORE__MAX_CONNECTIONS"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let f = file("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 1\n[store]\nbackend = \"sqlite\"\n");
        let err = load(f.path(), []).unwrap_err().to_string();
        assert!(err.contains("unknown field `listn`"), "{err}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let f = file("[server\nlisten = 1\n");
        let err = load(f.path(), []).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn the_shipped_default_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dealbridge.toml");
        load(&path, []).unwrap();
    }
}
