//! `keyshift broker`: the embedded Kafka-compatible broker (tansu, sqlite storage) as a
//! standalone process, for trying the other subcommands against a "real" cluster address or
//! for pointing kcat-like clients at something with no setup.
//!
//! The work is `keyshift_kafka::run_standalone`; this module only turns flags into its
//! [`StandaloneOptions`]. The first line of stdout is the bootstrap address (so a script can
//! read it), details go to stderr, and SIGINT/SIGTERM stop the broker cleanly with status 0.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use keyshift_kafka::broker::DEFAULT_STANDALONE_LISTEN;
use keyshift_kafka::StandaloneOptions;

use crate::exit::FlagError;

/// Flags of `keyshift broker`.
#[derive(Debug, Args)]
#[command(
    about = "Run the embedded Kafka-compatible broker until interrupted",
    long_about = "Run the embedded Kafka-compatible broker (tansu, sqlite storage) until \
                  interrupted.\n\nPrints the bootstrap address as the first line of stdout, \
                  then serves until SIGINT (Ctrl-C) or SIGTERM. Data lives in a temporary \
                  directory removed on exit unless --data-dir is given. It is for demos, tests \
                  and local development; use a real Kafka cluster for anything else."
)]
pub struct BrokerArgs {
    /// Address to listen on and advertise (port 0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_STANDALONE_LISTEN)]
    listen: SocketAddr,

    /// A topic to create at startup (needs --partitions).
    #[arg(long, requires = "partitions")]
    topic: Option<String>,

    /// Partitions of --topic.
    #[arg(long, requires = "topic", value_parser = clap::value_parser!(u32).range(1..))]
    partitions: Option<u32>,

    /// Keep the broker's data in this directory (kept on exit) instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Require SASL (SASL_PLAINTEXT): FILE holds one name:password per line ('#' comments).
    /// Clients authenticate with SCRAM-SHA-256 or SCRAM-SHA-512 as one of these users; tansu
    /// also accepts PLAIN, but with any password, so this is for testing clients'
    /// configuration, not for securing anything.
    #[arg(long, value_name = "FILE")]
    sasl_users: Option<PathBuf>,
}

impl BrokerArgs {
    fn options(self) -> Result<StandaloneOptions, FlagError> {
        let listen = if self.listen.port() == 0 {
            // The broker advertises the address it was given, so port 0 must be resolved to
            // a real port first; binding and releasing one is how to find a free one.
            let probe = std::net::TcpListener::bind(self.listen).map_err(|e| {
                FlagError::new("--listen", format!("cannot bind {}: {e}", self.listen))
            })?;
            probe
                .local_addr()
                .map_err(|e| FlagError::new("--listen", e.to_string()))?
        } else {
            self.listen
        };
        let topic = match (self.topic, self.partitions) {
            (Some(t), _) if t.trim().is_empty() => {
                return Err(FlagError::new("--topic", "must not be empty"))
            }
            (Some(t), Some(p)) => Some((t, p)),
            _ => None,
        };
        let sasl_users = match &self.sasl_users {
            Some(path) => keyshift_kafka::SaslUser::read_file(path)
                .map_err(|e| FlagError::new("--sasl-users", e))?,
            None => Vec::new(),
        };
        Ok(StandaloneOptions {
            listen,
            topic,
            data_dir: self.data_dir,
            sasl_users,
        })
    }
}

/// Runs `keyshift broker` until SIGINT or SIGTERM.
pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(keyshift_kafka::run_standalone(options))?;
    Ok(())
}
