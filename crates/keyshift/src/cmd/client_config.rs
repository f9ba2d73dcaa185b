//! `--client-config FILE`, shared by every command that talks to Kafka.
//!
//! The file is the Java client's `client.properties` (what users of a secured or managed
//! cluster already have); [`keyshift_kafka::ClientFile`] translates it to librdkafka's
//! properties. Its properties apply before the command's `-X` ones, so `-X` wins. Java-only
//! properties are dropped with one log line naming them; secrets never reach a log or an error.

use std::path::PathBuf;

use clap::Args;
use keyshift_kafka::{ClientFile, Property};

use crate::exit::FlagError;

/// `--client-config FILE`.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientConfigFlag {
    /// The Java client's client.properties for the cluster (security.protocol, sasl.mechanism,
    /// sasl.jaas.config, ssl.truststore.location of a PEM file, ...): translated to
    /// librdkafka's properties and applied before -X, which wins. Values may be ${env:NAME} or
    /// ${file:PATH}, so secrets can stay out of the file; its bootstrap.servers is not used
    /// (give --bootstrap-servers). Never printed.
    #[arg(long, value_name = "FILE", env = "KEYSHIFT_CLIENT_CONFIG")]
    client_config: Option<PathBuf>,
}

impl ClientConfigFlag {
    /// Whether a file was given.
    pub fn is_set(&self) -> bool {
        self.client_config.is_some()
    }

    /// The file's properties followed by `passthrough` (the `-X` flags), in the order they
    /// apply.
    pub fn merged(&self, passthrough: &[Property]) -> Result<Vec<Property>, FlagError> {
        self.merged_except(passthrough, &[])
    }

    /// [`merged`](Self::merged) without the file's properties named in `managed` (dropped with
    /// a log line): those an ordered consumer sets itself, which a consumer's
    /// `client.properties` often carries (`auto.offset.reset`, `enable.auto.commit`) and `-X`
    /// may not set.
    pub fn merged_except(
        &self,
        passthrough: &[Property],
        managed: &[&str],
    ) -> Result<Vec<Property>, FlagError> {
        let Some(path) = &self.client_config else {
            return Ok(passthrough.to_vec());
        };
        let file =
            ClientFile::load(path).map_err(|e| FlagError::new("--client-config", e.to_string()))?;
        let mut ignored = file.ignored;
        let mut out: Vec<Property> = Vec::new();
        for p in file.properties {
            if managed.contains(&p.key()) {
                ignored.push(p.key().to_owned());
            } else {
                out.push(p);
            }
        }
        if !ignored.is_empty() {
            tracing::info!(file = %path.display(), ?ignored, "--client-config: dropped properties only the Java client knows or keyshift manages itself");
        }
        out.extend(passthrough.iter().cloned());
        Ok(out)
    }
}
