//! Client configuration shared by every rdkafka client keyshift creates.
//!
//! [`ClientSettings`] holds what all clients of one run have in common — the bootstrap
//! servers, a client id and any number of librdkafka properties passed through verbatim
//! (`-X key=value`, as kcat does) — and turns them into an rdkafka [`ClientConfig`] for a
//! producer, a consumer or an admin client. Keeping one settings value per run is what lets
//! every subcommand work unchanged against the embedded broker or a real cluster that needs
//! TLS/SASL: those are just more passthrough properties.
//!
//! Properties are checked twice when parsed: syntactically (`key=value`, a plausible key) and
//! by librdkafka itself (unknown keys and invalid values are rejected), so a typo is reported
//! at startup naming the bad pair, not later as an opaque client-creation failure.

use std::fmt;
use std::str::FromStr;

use rdkafka::config::ClientConfig;

/// The client id used when none is given.
pub const DEFAULT_CLIENT_ID: &str = "keyshift";

/// Properties every keyshift producer gets unless overridden: no duplicates on retry and no
/// acknowledgement before all in-sync replicas have the record, because fenced migration
/// relies on the fence being durably ordered before the records routed after it.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[("enable.idempotence", "true"), ("acks", "all")];

/// An invalid client property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The pair has no `=`.
    #[error("invalid client property '{pair}': expected key=value (like -X linger.ms=5)")]
    MissingEquals {
        /// The text as given.
        pair: String,
    },
    /// The key is empty or contains characters no librdkafka property has.
    #[error(
        "invalid client property '{pair}': the key must be non-empty and made of letters, \
         digits, '.', '_' or '-'"
    )]
    InvalidKey {
        /// The text as given (value masked if sensitive).
        pair: String,
    },
    /// librdkafka rejected the pair (unknown key or invalid value).
    #[error("invalid client property '{pair}': {reason}")]
    Rejected {
        /// The text as given (value masked if sensitive).
        pair: String,
        /// librdkafka's explanation.
        reason: String,
    },
}

/// One librdkafka property, `key=value`, validated by librdkafka.
///
/// Parse it with [`str::parse`] (it implements [`FromStr`], so it can be a clap value type
/// for a repeatable `-X` flag) or build it with [`Property::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct Property {
    key: String,
    value: String,
}

impl Property {
    /// Validates and creates a property.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Result<Self, ConfigError> {
        let property = Property {
            key: key.into(),
            value: value.into(),
        };
        let valid_key = !property.key.is_empty()
            && property
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_key {
            return Err(ConfigError::InvalidKey {
                pair: property.to_string(),
            });
        }
        // librdkafka is the authority on what it accepts; asking it here turns a typo into an
        // error that names the pair instead of a failed client creation later.
        let mut probe = ClientConfig::new();
        probe.set(&property.key, &property.value);
        if let Err(err) = probe.create_native_config() {
            let reason = match err {
                rdkafka::error::KafkaError::ClientConfig(_, message, _, _) => message,
                other => other.to_string(),
            };
            return Err(ConfigError::Rejected {
                pair: property.to_string(),
                reason,
            });
        }
        Ok(property)
    }

    /// The property name, e.g. `linger.ms`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The property value as given.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether the value is a secret that must not appear in logs or error messages.
    pub fn is_sensitive(&self) -> bool {
        is_sensitive_key(&self.key)
    }
}

fn is_sensitive_key(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || matches!(
            key,
            "sasl.oauthbearer.config" | "sasl.jaas.config" | "ssl.key.pem" | "ssl_key"
        )
}

impl FromStr for Property {
    type Err = ConfigError;

    fn from_str(pair: &str) -> Result<Self, Self::Err> {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| ConfigError::MissingEquals {
                pair: if is_sensitive_key(pair) {
                    "***".to_owned()
                } else {
                    pair.to_owned()
                },
            })?;
        Property::new(key, value)
    }
}

/// Displays as `key=value`, with the value replaced by `***` for secrets.
impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_sensitive() {
            write!(f, "{}=***", self.key)
        } else {
            write!(f, "{}={}", self.key, self.value)
        }
    }
}

impl fmt::Debug for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Property({self})")
    }
}

/// What all rdkafka clients of one run share; see the [module docs](self).
///
/// Precedence, lowest first: keyshift's defaults (for producers [`PRODUCER_DEFAULTS`]; for
/// consumers manual commits and `auto.offset.reset=earliest`), then the bootstrap servers and
/// client id, then the passthrough properties in the order they were added — so a user's
/// `-X` always wins.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    bootstrap_servers: String,
    client_id: String,
    properties: Vec<Property>,
}

impl ClientSettings {
    /// Settings for the given bootstrap servers (`host:port[,host:port...]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        ClientSettings {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            properties: Vec::new(),
        }
    }

    /// The same settings for other bootstrap servers (another cluster with the same client
    /// properties, or the same cluster through a proxy).
    pub fn with_bootstrap_servers(&self, bootstrap_servers: impl Into<String>) -> Self {
        ClientSettings {
            bootstrap_servers: bootstrap_servers.into(),
            ..self.clone()
        }
    }

    /// Sets the client id the broker sees (logs, quotas, the proxy's per-client metrics).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Adds one passthrough property; a later property with the same key wins.
    pub fn property(mut self, property: Property) -> Self {
        self.properties.push(property);
        self
    }

    /// Adds already-parsed passthrough properties, e.g. the values of a repeatable `-X` flag.
    pub fn properties(mut self, properties: impl IntoIterator<Item = Property>) -> Self {
        self.properties.extend(properties);
        self
    }

    /// Parses and adds `key=value` pairs; the error names the first bad pair.
    pub fn parse_properties<I, S>(self, pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let parsed = pairs
            .into_iter()
            .map(|pair| pair.as_ref().parse::<Property>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.properties(parsed))
    }

    /// The bootstrap servers as given.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// The client id.
    pub fn get_client_id(&self) -> &str {
        &self.client_id
    }

    /// The passthrough properties, in the order they apply.
    pub fn passthrough(&self) -> &[Property] {
        &self.properties
    }

    /// Configuration for a producer: [`PRODUCER_DEFAULTS`] then the shared settings.
    pub fn producer_config(&self) -> ClientConfig {
        self.build(PRODUCER_DEFAULTS)
    }

    /// Configuration for a consumer in `group_id`. Offsets are committed explicitly by the
    /// caller (`enable.auto.commit=false`), because the order gate must never commit past a
    /// record it has not processed; a group with no committed offset starts at the earliest.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.build(&[
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ]);
        config.set("group.id", group_id);
        // Passthrough applies last, even over the group id set above.
        for property in &self.properties {
            config.set(property.key(), property.value());
        }
        config
    }

    /// Configuration for an admin or metadata-only client.
    pub fn admin_config(&self) -> ClientConfig {
        self.build(&[])
    }

    fn build(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        for property in &self.properties {
            config.set(property.key(), property.value());
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_known_properties() {
        let p: Property = "linger.ms=5".parse().unwrap();
        assert_eq!((p.key(), p.value()), ("linger.ms", "5"));
        // Split at the first '=': values may contain '='.
        let p: Property = "client.rack=a=b".parse().unwrap();
        assert_eq!((p.key(), p.value()), ("client.rack", "a=b"));
    }

    #[test]
    fn rejects_missing_equals_naming_the_pair() {
        let err = "linger.ms".parse::<Property>().unwrap_err();
        assert_eq!(
            err,
            ConfigError::MissingEquals {
                pair: "linger.ms".into()
            }
        );
        assert!(err.to_string().contains("'linger.ms'"), "{err}");
    }

    #[test]
    fn rejects_bad_keys() {
        for pair in ["=5", "linger ms=5", "lin/ger=5"] {
            let err = pair.parse::<Property>().unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidKey { .. }),
                "{pair}: {err}"
            );
            assert!(err.to_string().contains(pair), "{err}");
        }
    }

    #[test]
    fn librdkafka_rejects_unknown_keys_and_bad_values() {
        let err = "no.such.property=1".parse::<Property>().unwrap_err();
        let ConfigError::Rejected { pair, reason } = &err else {
            panic!("expected Rejected, got {err:?}")
        };
        assert_eq!(pair, "no.such.property=1");
        assert!(reason.contains("no.such.property"), "{reason}");

        let err = "linger.ms=soon".parse::<Property>().unwrap_err();
        assert!(matches!(err, ConfigError::Rejected { .. }), "{err:?}");
        assert!(err.to_string().contains("linger.ms=soon"), "{err}");
    }

    #[test]
    fn secrets_are_masked_in_messages() {
        let p: Property = "sasl.password=hunter2".parse().unwrap();
        assert_eq!(p.value(), "hunter2");
        assert_eq!(p.to_string(), "sasl.password=***");
        assert!(!format!("{p:?}").contains("hunter2"));
        let err = "ssl.key.password".parse::<Property>().unwrap_err();
        assert!(!err.to_string().contains("ssl.key.password"), "{err}");
    }

    #[test]
    fn producer_defaults_apply_and_passthrough_wins() {
        let settings = ClientSettings::new("127.0.0.1:9092").client_id("t");
        let config = settings.producer_config();
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(config.get("client.id"), Some("t"));

        let settings = settings
            .parse_properties(["acks=1", "linger.ms=5", "linger.ms=7"])
            .unwrap();
        let config = settings.producer_config();
        assert_eq!(config.get("acks"), Some("1"));
        assert_eq!(config.get("linger.ms"), Some("7"));
        // Defaults are producer-only: consumers and admin clients do not get them.
        assert_eq!(settings.admin_config().get("enable.idempotence"), None);
    }

    #[test]
    fn consumer_config_has_group_and_manual_commit() {
        let config = ClientSettings::new("b:1").consumer_config("g1");
        assert_eq!(config.get("group.id"), Some("g1"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(config.get("acks"), None);
    }

    #[test]
    fn parse_properties_names_the_first_bad_pair() {
        let err = ClientSettings::new("b:1")
            .parse_properties(["linger.ms=5", "oops", "also-bad"])
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::MissingEquals {
                pair: "oops".into()
            }
        );
    }
}
