//! Typed access to a request's `params`, with errors (return value 5) that name the
//! parameter. An absent or `null` parameter is NULL; a parameter the method does not have
//! is refused.

use replication::service::MethodError;
use serde_json::{Map, Value};

use crate::refs::Ref;

/// A method's parameters.
#[derive(Debug)]
pub(crate) struct Params<'a> {
    map: &'a Map<String, Value>,
}

fn wrong(name: &str, want: &str, v: &Value) -> MethodError {
    let got = match v {
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::Null => "null",
    };
    MethodError::invalid(name, format!("{name} must be {want}, not {got}"))
}

impl<'a> Params<'a> {
    /// Check that every parameter is one of `known`.
    pub(crate) fn new(map: &'a Map<String, Value>, known: &[&str]) -> Result<Self, MethodError> {
        for k in map.keys() {
            if !known.contains(&k.as_str()) {
                return Err(MethodError::invalid(
                    k,
                    format!(
                        "unknown parameter {k}; this method takes {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(Self { map })
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// Whether a parameter is given (not NULL).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The raw value.
    pub(crate) fn raw(&self, name: &str) -> Option<&'a Value> {
        self.get(name)
    }

    /// An unsigned integer that fits `max`.
    pub(crate) fn uint(&self, name: &str, max: u64) -> Result<Option<u64>, MethodError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            Some(n) => Err(MethodError::invalid(
                name,
                format!("{name}={n} is out of range (at most {max})"),
            )),
            None => Err(wrong(name, "an unsigned integer", v)),
        }
    }

    /// A uint16.
    pub(crate) fn u16(&self, name: &str) -> Result<Option<u16>, MethodError> {
        Ok(self.uint(name, u64::from(u16::MAX))?.map(|n| n as u16))
    }

    /// A boolean.
    pub(crate) fn bool(&self, name: &str) -> Result<Option<bool>, MethodError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(wrong(name, "a boolean", v)),
        }
    }

    /// A string.
    pub(crate) fn string(&self, name: &str) -> Result<Option<&'a str>, MethodError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong(name, "a string", v)),
        }
    }

    /// A required string.
    pub(crate) fn req_string(&self, name: &str) -> Result<&'a str, MethodError> {
        self.string(name)?
            .ok_or_else(|| MethodError::invalid(name, format!("{name} is required")))
    }

    /// A reference of any kind.
    pub(crate) fn reference(&self, name: &str) -> Result<Option<Ref>, MethodError> {
        match self.string(name)? {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|e| MethodError::invalid(name, format!("{name}: {e}"))),
        }
    }

    /// A reference of one kind, picked by `pick` (`what` names the kind in errors).
    pub(crate) fn typed_ref<T>(
        &self,
        name: &str,
        what: &str,
        pick: impl Fn(Ref) -> Option<T>,
    ) -> Result<Option<T>, MethodError> {
        self.typed(name, what, pick)
    }

    fn typed<T>(
        &self,
        name: &str,
        what: &str,
        pick: impl Fn(Ref) -> Option<T>,
    ) -> Result<Option<T>, MethodError> {
        match self.reference(name)? {
            None => Ok(None),
            Some(r) => {
                let shown = r.to_string();
                pick(r).map(Some).ok_or_else(|| {
                    MethodError::invalid(
                        name,
                        format!("{name} must be a {what} reference ({what}:...), not {shown}"),
                    )
                })
            }
        }
    }

    /// `volume:<name>`.
    pub(crate) fn volume(&self, name: &str) -> Result<Option<String>, MethodError> {
        self.typed(name, "volume", |r| match r {
            Ref::Volume(n) => Some(n),
            _ => None,
        })
    }

    /// A required `volume:<name>`.
    pub(crate) fn req_volume(&self, name: &str) -> Result<String, MethodError> {
        self.volume(name)?
            .ok_or_else(|| MethodError::invalid(name, format!("{name} is required")))
    }

    /// `group:<name>`.
    pub(crate) fn group(&self, name: &str) -> Result<Option<String>, MethodError> {
        self.typed(name, "group", |r| match r {
            Ref::Group(n) => Some(n),
            _ => None,
        })
    }

    /// A required `group:<name>`.
    pub(crate) fn req_group(&self, name: &str) -> Result<String, MethodError> {
        self.group(name)?
            .ok_or_else(|| MethodError::invalid(name, format!("{name} is required")))
    }

    /// `sync:<id>`.
    pub(crate) fn sync(&self, name: &str) -> Result<Option<u64>, MethodError> {
        self.typed(name, "sync", |r| match r {
            Ref::Sync(i) => Some(i),
            _ => None,
        })
    }

    /// `pool:<name>`.
    pub(crate) fn pool(&self, name: &str) -> Result<Option<String>, MethodError> {
        self.typed(name, "pool", |r| match r {
            Ref::Pool(n) => Some(n),
            _ => None,
        })
    }

    /// An array of references of one kind, picked by `pick`.
    pub(crate) fn ref_list<T>(
        &self,
        name: &str,
        what: &str,
        pick: impl Fn(Ref) -> Option<T>,
    ) -> Result<Option<Vec<T>>, MethodError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(wrong(name, "an array of references", v));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::String(s) = item else {
                return Err(wrong(&format!("{name}[{i}]"), "a reference string", item));
            };
            let r: Ref = s
                .parse()
                .map_err(|e| MethodError::invalid(name, format!("{name}[{i}]: {e}")))?;
            out.push(pick(r).ok_or_else(|| {
                MethodError::invalid(
                    name,
                    format!("{name}[{i}] must be a {what} reference ({what}:...), not {s}"),
                )
            })?);
        }
        Ok(Some(out))
    }
}
