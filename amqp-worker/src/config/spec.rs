//! What the configuration declares besides the worker's own queues: exchanges, bindings and
//! their arguments.

use std::collections::BTreeMap;

use amqp_client::ExchangeKind;
use amqp_client::amqp_codec::{FieldTable, FieldValue};
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A value in declare or bind arguments (`x-match = "all"`, `x-max-length = 1000`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ArgValue {
    /// A boolean.
    Bool(bool),
    /// An integer (sent as a signed 64-bit value).
    Int(i64),
    /// A string.
    Str(String),
}

/// Arguments as a name-to-value map.
pub type Arguments = BTreeMap<String, ArgValue>;

/// Converts arguments to the field table the broker receives.
pub fn arguments_table(args: &Arguments) -> FieldTable {
    args.iter()
        .filter_map(|(k, v)| {
            let key = amqp_client::amqp_codec::ShortStr::try_from(k.as_str()).ok()?;
            let value = match v {
                ArgValue::Bool(b) => FieldValue::Bool(*b),
                ArgValue::Int(i) => FieldValue::I64(*i),
                ArgValue::Str(s) => FieldValue::from(s.as_str()),
            };
            Some((key, value))
        })
        .collect()
}

/// An exchange to declare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSpec {
    /// Its name.
    pub name: String,
    /// `direct`, `fanout`, `topic`, `headers`, or a plugin's `x-...` type.
    #[serde(rename = "type", default = "default_kind")]
    pub kind: String,
    /// Survives a broker restart (default true).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted when its last binding goes (default false).
    #[serde(default)]
    pub auto_delete: bool,
    /// Reachable only through exchange-to-exchange bindings (default false).
    #[serde(default)]
    pub internal: bool,
    /// Declare arguments (e.g. `alternate-exchange`).
    #[serde(default)]
    pub arguments: Arguments,
}

impl ExchangeSpec {
    /// A durable exchange of `kind`.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: Arguments::new(),
        }
    }

    /// The exchange type, or the error naming the unknown one.
    pub fn exchange_kind(&self) -> Result<ExchangeKind, ConfigError> {
        match self.kind.as_str() {
            "direct" => Ok(ExchangeKind::Direct),
            "fanout" => Ok(ExchangeKind::Fanout),
            "topic" => Ok(ExchangeKind::Topic),
            "headers" => Ok(ExchangeKind::Headers),
            k if k.starts_with("x-") && k.len() > 2 => Ok(ExchangeKind::Custom(k.to_owned())),
            _ => Err(ConfigError::UnknownExchangeType {
                exchange: self.name.clone(),
                kind: self.kind.clone(),
            }),
        }
    }
}

/// Whether a binding's destination is a queue or an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationType {
    /// queue.bind.
    #[default]
    Queue,
    /// exchange.bind (RabbitMQ's exchange-to-exchange binding).
    Exchange,
}

/// A binding to declare: `source` exchange to a queue or exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingSpec {
    /// The exchange messages come from.
    pub source: String,
    /// The queue or exchange they go to; the work queue when absent.
    #[serde(default)]
    pub destination: Option<String>,
    /// Queue (default) or exchange.
    #[serde(default)]
    pub destination_type: DestinationType,
    /// The binding key (ignored by fanout and headers exchanges).
    #[serde(default)]
    pub routing_key: String,
    /// Binding arguments, e.g. `x-match` and the headers to match for a headers exchange.
    #[serde(default)]
    pub arguments: Arguments,
}

impl BindingSpec {
    /// Binds the work queue to `source` with `routing_key`.
    pub fn to_work_queue(source: impl Into<String>, routing_key: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            destination: None,
            destination_type: DestinationType::Queue,
            routing_key: routing_key.into(),
            arguments: Arguments::new(),
        }
    }
}

impl BindingSpec {
    /// Checks what can be checked without the broker: a source (the default exchange cannot
    /// be bound), a destination for exchange-to-exchange bindings, name lengths, and the
    /// `x-match` value of a headers binding.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let what = || {
            format!(
                "binding from '{}' to '{}'",
                self.source,
                self.destination.as_deref().unwrap_or("the work queue")
            )
        };
        if self.source.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{}: the default exchange cannot be bound; name a source exchange",
                what()
            )));
        }
        check_name("exchange", &self.source)?;
        match (&self.destination, self.destination_type) {
            (None, DestinationType::Exchange) => {
                return Err(ConfigError::Invalid(format!(
                    "{}: destination_type = \"exchange\" needs a destination",
                    what()
                )));
            }
            (Some(d), _) => check_name("destination", d)?,
            (None, DestinationType::Queue) => {}
        }
        if self.routing_key.len() > 255 {
            return Err(ConfigError::Invalid(format!(
                "{}: the routing key is longer than 255 bytes",
                what()
            )));
        }
        if let Some(m) = self.arguments.get("x-match") {
            let ok = matches!(m, ArgValue::Str(s) if ["all", "any", "all-with-x", "any-with-x"].contains(&s.as_str()));
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "{}: x-match must be \"all\", \"any\", \"all-with-x\" or \"any-with-x\"",
                    what()
                )));
            }
        }
        Ok(())
    }
}

/// A queue or exchange name the broker accepts: 1 to 255 bytes.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 255 {
        return Err(ConfigError::Invalid(format!(
            "{what} name '{name}' must be 1 to 255 bytes"
        )));
    }
    Ok(())
}

fn default_kind() -> String {
    "direct".into()
}

fn yes() -> bool {
    true
}
