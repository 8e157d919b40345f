//! Typed reads of quantization-config fields, shared by the schemes' config parsers: a field
//! of the wrong type is an [`FormatError::Config`] naming it; absent or `null` means the default.

use crate::error::{Error, FormatError, Result};
use serde_json::Value;

pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Format(FormatError::Config { field: field.into(), reason: reason.into() })
}

pub(crate) fn get_bool(obj: &serde_json::Map<String, Value>, field: &str, default: bool) -> Result<bool> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(invalid(field, format!("expected true or false, found {v}"))),
    }
}

pub(crate) fn get_int(obj: &serde_json::Map<String, Value>, field: &str) -> Result<Option<i64>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            v.as_i64().map(Some).ok_or_else(|| invalid(field, format!("expected an integer, found {v}")))
        }
    }
}

pub(crate) fn get_str<'a>(obj: &'a serde_json::Map<String, Value>, field: &str) -> Result<Option<&'a str>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(invalid(field, format!("expected a string, found {v}"))),
    }
}
