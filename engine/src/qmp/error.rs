//! QMP error replies: a class (QEMU's `ErrorClass` words) and a human description.
//!
//! QEMU's management tools branch on the class only (`CommandNotFound`, `DeviceNotActive`, …);
//! the description is for people, so matching QEMU's wording where we can keeps logs and
//! scripts that grep for it working.

use std::fmt;

use serde_json::{json, Value};

/// The class of a QMP error, shown with QEMU's exact words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Everything without a more specific class (bad arguments, refused verbs).
    GenericError,
    /// The command does not exist, or is not available before (or after) negotiation.
    CommandNotFound,
    /// A device or node name that names nothing.
    DeviceNotFound,
    /// A block job name that names no job (`block-job-*` commands).
    DeviceNotActive,
    /// A KVM capability is missing (never produced here; listed so every QEMU class parses).
    KVMMissingCap,
}

impl ErrorClass {
    /// Every class, in QEMU's order.
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::GenericError,
        ErrorClass::CommandNotFound,
        ErrorClass::DeviceNotFound,
        ErrorClass::DeviceNotActive,
        ErrorClass::KVMMissingCap,
    ];

    /// QEMU's word for the class.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
            ErrorClass::DeviceNotFound => "DeviceNotFound",
            ErrorClass::DeviceNotActive => "DeviceNotActive",
            ErrorClass::KVMMissingCap => "KVMMissingCap",
        }
    }

    /// The class with QEMU's word `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.as_str() == name)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One QMP error: what goes into `{"error": {"class": …, "desc": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {desc}")]
pub struct QmpError {
    /// The class clients branch on.
    pub class: ErrorClass,
    /// The human description.
    pub desc: String,
}

impl QmpError {
    /// An error of `class` with `desc`.
    pub fn new(class: ErrorClass, desc: impl Into<String>) -> Self {
        Self {
            class,
            desc: desc.into(),
        }
    }

    /// A `GenericError`.
    pub fn generic(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::GenericError, desc)
    }

    /// A `CommandNotFound`.
    pub fn command_not_found(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::CommandNotFound, desc)
    }

    /// The object under the reply's `error` key.
    pub fn to_json(&self) -> Value {
        json!({ "class": self.class.as_str(), "desc": self.desc })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_read_back_their_words() {
        for class in ErrorClass::ALL {
            assert_eq!(ErrorClass::from_name(&class.to_string()), Some(class));
        }
        assert_eq!(ErrorClass::from_name("genericerror"), None);
    }

    #[test]
    fn error_object_has_class_and_desc() {
        let error = QmpError::generic("Parameter 'x' is unexpected");
        assert_eq!(
            error.to_json(),
            json!({"class": "GenericError", "desc": "Parameter 'x' is unexpected"})
        );
    }
}
