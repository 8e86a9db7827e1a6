//! Reading a [`Figment`] into the raw model, collecting every problem instead of stopping at the
//! first: a key that fails to parse is reported and dropped, and the section is read again.

use figment::error::{Actual, Kind as FigKind};
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;
use serde::de::DeserializeOwned;

use super::names::suggest;
use super::raw::{self, RawDependency};
use super::validate::{validate, RawConfig, Routes};
use super::{Config, ConfigError, ConfigErrors};

/// Reads and validates a `health.toml` given as text, resolving `*_env` keys through `env`, for
/// probe routes served on `server.listen` as `vitals serve` serves them.
pub fn from_toml(toml: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    from_toml_for(toml, env, Routes::OnListen)
}

/// [`from_toml`] for routes served where `routes` says: an agent that embeds vitals and mounts
/// them in its own app gives [`Routes::Elsewhere`], and `server.listen` is then not taken as an
/// address in use.
pub fn from_toml_for(
    toml: &str,
    env: &dyn Fn(&str) -> Option<String>,
    routes: Routes,
) -> Result<Config, ConfigErrors> {
    use figment::providers::{Format, Toml};
    load_for(&Figment::from(Toml::string(toml)), env, routes)
}

/// Reads and validates the configuration held by `figment`. `env` resolves the environment
/// variables that `*_env` keys name (pass `|k| std::env::var(k).ok()` in production).
pub fn load(
    figment: &Figment,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    load_for(figment, env, Routes::OnListen)
}

/// [`load`] for probe routes served where `routes` says.
pub fn load_for(
    figment: &Figment,
    env: &dyn Fn(&str) -> Option<String>,
    routes: Routes,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let root: Dict = match figment.extract::<Dict>() {
        Ok(root) => root,
        Err(e) => {
            // The file itself does not parse (TOML syntax): nothing else can be read.
            for e in e {
                errors.push(ConfigError::new(e.path.join("."), e.kind.to_string()));
            }
            return Err(ConfigErrors(errors));
        }
    };
    // figment nests everything under the selected profile's name only when profiles are used;
    // a plain file gives the sections at the top.
    for key in root.keys() {
        if !raw::SECTIONS.contains(&key.as_str()) {
            errors.push(ConfigError::new(
                key.clone(),
                format!(
                    "unknown section{}; the sections are: {}",
                    suggest(key, raw::SECTIONS),
                    raw::SECTIONS.join(", ")
                ),
            ));
        }
    }

    let raw = RawConfig {
        server: section(&root, "server", &mut errors),
        startup: section(&root, "startup", &mut errors),
        liveness: section(&root, "liveness", &mut errors),
        readiness: section(&root, "readiness", &mut errors),
        drain: section(&root, "drain", &mut errors),
        probes: section(&root, "probes", &mut errors),
        agent: section(&root, "agent", &mut errors),
        dependencies: table_array(
            &root,
            "dependencies",
            &mut errors,
            |d: &mut RawDependency, keys| d.present = keys,
        ),
        signals: table_array(
            &root,
            "signals",
            &mut errors,
            |_: &mut raw::RawSignal, _| {},
        ),
        gate: root
            .contains_key("gate")
            .then(|| section(&root, "gate", &mut errors)),
        fleet: root
            .contains_key("fleet")
            .then(|| section(&root, "fleet", &mut errors)),
        processes: table_array(
            &root,
            "processes",
            &mut errors,
            |_: &mut raw::RawProcess, _| {},
        ),
    };
    match validate(raw, env, routes) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(more) => {
            errors.extend(more.0);
            Err(ConfigErrors(errors))
        }
    }
}

fn section<T: DeserializeOwned + Default>(
    root: &Dict,
    name: &str,
    errors: &mut Vec<ConfigError>,
) -> T {
    match root.get(name) {
        None => T::default(),
        Some(Value::Dict(_, dict)) => extract_lenient(dict.clone(), name, errors).0,
        Some(other) => {
            errors.push(ConfigError::new(
                name,
                format!(
                    "expected a table ([{name}]), found {}",
                    describe_value(other)
                ),
            ));
            T::default()
        }
    }
}

/// An array of tables such as `[[dependencies]]`, each entry read on its own. `present` gets
/// the keys each entry wrote.
fn table_array<T: DeserializeOwned + Default>(
    root: &Dict,
    name: &str,
    errors: &mut Vec<ConfigError>,
    present: impl Fn(&mut T, Vec<String>),
) -> Vec<T> {
    match root.get(name) {
        None => Vec::new(),
        Some(Value::Array(_, items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let prefix = format!("{name}[{i}]");
                match item {
                    Value::Dict(_, dict) => {
                        let (mut entry, read): (T, Dict) =
                            extract_lenient(dict.clone(), &prefix, errors);
                        present(&mut entry, read.into_keys().collect());
                        entry
                    }
                    other => {
                        errors.push(ConfigError::new(
                            prefix,
                            format!(
                                "expected a table ([[{name}]]), found {}",
                                describe_value(other)
                            ),
                        ));
                        T::default()
                    }
                }
            })
            .collect(),
        Some(other) => {
            errors.push(ConfigError::new(
                name,
                format!(
                    "expected an array of tables ([[{name}]]), found {}",
                    describe_value(other)
                ),
            ));
            Vec::new()
        }
    }
}

/// Deserializes `dict`; each key that fails is reported under `prefix` and removed, then the rest
/// is read again, so one wrong type does not hide the next. Also returns the keys that were read
/// (those not reported), so later checks do not report a key twice.
fn extract_lenient<T: DeserializeOwned + Default>(
    mut dict: Dict,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
) -> (T, Dict) {
    // Each round removes at least one key, so this ends; the bound is only a guard.
    for _ in 0..256 {
        let err = match Figment::from(Serialized::defaults(&dict)).extract::<T>() {
            Ok(value) => return (value, dict),
            Err(err) => err,
        };
        let mut removed = false;
        for e in err {
            let mut path = e.path.clone();
            let message = match &e.kind {
                FigKind::UnknownField(field, expected) => {
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    format!(
                        "unknown key{}; expected one of: {}",
                        suggest(field, expected),
                        expected.join(", ")
                    )
                }
                FigKind::InvalidType(actual, expected) => match whole_number(expected) {
                    Some(range) if matches!(actual, Actual::Str(_)) => {
                        format!("expected {range}, found {actual}; write a number, without quotes")
                    }
                    Some(range) => format!("expected {range}, found {actual}"),
                    None => format!("expected {expected}, found {actual}"),
                },
                FigKind::InvalidValue(actual, expected) => {
                    let number = match actual {
                        Actual::Signed(n) => Some(n.to_string()),
                        Actual::Unsigned(n) => Some(n.to_string()),
                        _ => None,
                    };
                    match (number, whole_number(expected)) {
                        (Some(n), Some(range)) => {
                            format!("{n} is not {range}; write one in that range")
                        }
                        _ => format!("invalid value {actual}: expected {expected}"),
                    }
                }
                other => other.to_string(),
            };
            errors.push(ConfigError::new(join_key(prefix, &path), message));
            removed |= remove_path(&mut dict, &path);
        }
        if !removed {
            return (T::default(), dict);
        }
    }
    (T::default(), dict)
}

/// What serde calls an unsigned integer type, in words: "a whole number from 0 to 255".
fn whole_number(expected: &str) -> Option<String> {
    let max = match expected {
        "u8" => u64::from(u8::MAX),
        "u16" => u64::from(u16::MAX),
        "u32" => u64::from(u32::MAX),
        "u64" | "usize" => u64::MAX,
        _ => return None,
    };
    Some(format!("a whole number from 0 to {max}"))
}

fn remove_path(dict: &mut Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => dict.remove(last).is_some(),
        [first, rest @ ..] => match dict.get_mut(first) {
            Some(Value::Dict(_, inner)) => remove_path(inner, rest),
            // An array element (a list of strings with one bad item): drop the whole key.
            Some(_) => dict.remove(first).is_some(),
            None => false,
        },
    }
}

/// `prefix` + path, with array indices written `[i]`.
fn join_key(prefix: &str, path: &[String]) -> String {
    let mut key = prefix.to_owned();
    for part in path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

fn describe_value(v: &Value) -> &'static str {
    match v {
        Value::String(..) => "a string",
        Value::Char(..) => "a character",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "nothing",
        Value::Dict(..) => "a table",
        Value::Array(..) => "an array",
    }
}
