//! The one error every config check returns: the key path, the offending value when there is
//! one, and the rule it breaks, e.g. ``train.lr = -0.001: must be a positive number``.

use std::fmt::Display;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}{}: {rule}", value.as_ref().map(|v| format!(" = {v}")).unwrap_or_default())]
pub struct ConfigError {
    /// Dotted path from the top of the run config, e.g. `diffusion.schedule.d_ref`.
    pub key: String,
    pub value: Option<String>,
    pub rule: String,
}

impl ConfigError {
    /// A rule about a key as a whole (a missing entry, a length that does not match).
    pub fn key(key: impl Into<String>, rule: impl Into<String>) -> Self {
        Self { key: key.into(), value: None, rule: rule.into() }
    }

    /// A value the key may not take.
    pub fn value(key: impl Into<String>, value: impl Display, rule: impl Into<String>) -> Self {
        Self { key: key.into(), value: Some(value.to_string()), rule: rule.into() }
    }

    /// The same error one section further out: `steps` inside `sample` becomes `sample.steps`.
    pub fn within(mut self, section: &str) -> Self {
        self.key = format!("{section}.{}", self.key);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_full_key_and_the_value() {
        let e = ConfigError::value("lr", -0.001, "must be a positive number").within("train");
        assert_eq!(e.to_string(), "train.lr = -0.001: must be a positive number");
        assert_eq!(ConfigError::key("model.kinds", "has 2 entries").to_string(), "model.kinds: has 2 entries");
    }
}
