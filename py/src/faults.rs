//! The one dict form of a fault rule (docs/faults.md), for `FileMirror(faults=...)` (and so
//! `Mirror`, `mirror`) and for `Simulation(faults=...)` / `sweep`: `{"side", "op", "nth",
//! "count", "error"}`, the fields of the core's `FaultRule`.

use crate::convert::{non_negative, parse_error_kind};
use crate::errors::invalid_argument;
use blockmirror_core::fault::{FaultOp, FaultRule, Side};
use blockmirror_core::job::IoErrorKind;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt};

/// The keys of a rule dict.
pub const RULE_KEYS: &[&str] = &["side", "op", "nth", "count", "error"];

/// A rule from its dict. `special` lists `error` names the caller handles itself (the file
/// mirror's `"panic"`); such a name is returned beside a rule failing with `io`.
///
/// Compatibility: an integer `op` is the simulator's older spelling of a count from 0 (it
/// meant "the op-th I/O on that side"): `{"op": 3}` is `{"nth": 4}`.
pub fn parse_rule(dict: &Bound<'_, PyDict>, special: &[&'static str]) -> PyResult<(FaultRule, Option<&'static str>)> {
    for key in dict.keys() {
        let key: String = key.extract()?;
        if !RULE_KEYS.contains(&key.as_str()) {
            return Err(invalid_argument(format!("unknown fault key {key:?} (use {})", RULE_KEYS.join(", "))));
        }
    }
    let get = |key: &str| -> PyResult<Option<Bound<'_, PyAny>>> { Ok(dict.get_item(key)?.filter(|v| !v.is_none())) };
    let int = |key: &str, value: &Bound<'_, PyAny>| -> PyResult<u64> {
        if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
            return Err(invalid_argument(format!("fault {key} must be an int")));
        }
        let n: i64 = value.extract().map_err(|_| invalid_argument(format!("fault {key} is too large")))?;
        non_negative(n, &format!("fault {key}"))
    };
    let name = |key: &str, default: &str| -> PyResult<String> {
        match get(key)? {
            None => Ok(default.to_owned()),
            Some(v) => v.extract().map_err(|_| invalid_argument(format!("fault {key} must be a string"))),
        }
    };
    let side_name = name("side", "target")?;
    let side: Side = side_name
        .parse()
        .map_err(|_| invalid_argument(format!("unknown fault side {side_name:?} (use {})", Side::NAMES.join(", "))))?;
    let mut nth = get("nth")?.map(|v| int("nth", &v)).transpose()?;
    let op = match get("op")? {
        Some(v) if v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() => {
            if nth.is_some() {
                return Err(invalid_argument("a fault has nth or an integer op (the older spelling), not both"));
            }
            nth = Some(int("op", &v)?.saturating_add(1));
            FaultOp::Any
        }
        Some(v) => {
            let op: String = v.extract().map_err(|_| invalid_argument("fault op must be a string"))?;
            op.parse().map_err(|_| invalid_argument(format!("unknown fault op {op:?} (use {})", FaultOp::NAMES.join(", "))))?
        }
        None => FaultOp::Any,
    };
    let count = get("count")?.map(|v| int("count", &v)).transpose()?.unwrap_or(1);
    let (error, special_name) = match get("error")? {
        None => (IoErrorKind::Io, None),
        Some(v) => match v.extract::<String>() {
            Ok(s) => match special.iter().copied().find(|n| *n == s) {
                Some(n) => (IoErrorKind::Io, Some(n)),
                None => {
                    let known = IoErrorKind::NAMED.map(|k| format!("{:?}", k.name())).join(", ");
                    let error = s.parse().map_err(|_| {
                        invalid_argument(format!("unknown fault error {s:?} (use {known} or an errno)"))
                    })?;
                    (error, None)
                }
            },
            Err(_) => (parse_error_kind(&v)?, None),
        },
    };
    let rule = FaultRule::new(side, op, nth.unwrap_or(1), count, error).map_err(invalid_argument)?;
    Ok((rule, special_name))
}
