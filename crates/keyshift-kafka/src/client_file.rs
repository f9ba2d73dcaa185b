//! `--client-config FILE`: the Java client's `client.properties`, as librdkafka properties.
//!
//! Why: users of a managed or secured cluster (Confluent Cloud, MSK, Aiven, Strimzi) already
//! have a `client.properties` for the Java tools — `security.protocol`, `sasl.mechanism`,
//! `sasl.jaas.config`, truststores. keyshift's clients are librdkafka, whose property names
//! mostly agree; this module reads the file and translates the few that do not, so the same
//! file works unchanged.
//!
//! How: the file is read in Java's properties syntax (`key=value` or `key: value`, `#` and `!`
//! comments, `\` at the end of a line continues it, `\uXXXX` and the usual escapes). Then:
//! - a value `${env:NAME}` is the environment variable `NAME`, `${file:PATH}` the contents of
//!   the file `PATH` (trimmed) — so a secret can stay out of the file; a missing one is an
//!   error naming the variable or path, never the value;
//! - `sasl.jaas.config` becomes `sasl.username`/`sasl.password` (PLAIN and SCRAM login
//!   modules) or `sasl.oauthbearer.client.id`/`.client.secret`/`.scope` with
//!   `sasl.oauthbearer.method=oidc` (the OAUTHBEARER login module); `sasl.mechanism` is
//!   librdkafka's alias of `sasl.mechanisms` and passes as it is;
//! - `ssl.truststore.location` of a PEM truststore becomes `ssl.ca.location`, a PKCS#12
//!   keystore passes as `ssl.keystore.location`; a JKS store is an error that says to convert
//!   it to PEM (librdkafka cannot read JKS);
//! - `ssl.endpoint.identification.algorithm=` (empty: Java's "no hostname check") becomes
//!   `none`;
//! - properties only the Java client knows (serializers, `client.dns.lookup`, callback handler
//!   classes, store types, Schema Registry settings) are dropped and listed in
//!   [`ClientFile::ignored`], so a caller can say so;
//! - `bootstrap.servers` is returned apart ([`ClientFile::bootstrap_servers`]): the command
//!   line's servers win.
//!
//! Everything else goes to librdkafka as it is, validated like `-X` ([`Property::new`]), so a
//! property librdkafka does not know is an error naming it (and masking its value when it is a
//! secret).

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, Property};

/// Properties only the Java client knows: dropped (and listed) rather than refused.
const JAVA_ONLY: &[&str] = &[
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
    "client.dns.lookup",
    "sasl.login.callback.handler.class",
    "sasl.client.callback.handler.class",
    "sasl.login.class",
    "ssl.truststore.type",
    "ssl.keystore.type",
    "ssl.truststore.password",
    "ssl.protocol",
    "ssl.enabled.protocols",
    "sasl.oauthbearer.token.endpoint.url.backup",
    "default.api.timeout.ms",
    "interceptor.classes",
    "partitioner.class",
];

/// Prefixes of properties other tools read from the same file (Schema Registry, Connect).
const OTHER_TOOLS: &[&str] = &["schema.registry.", "basic.auth.", "specific.avro."];

/// A client configuration file, read and translated; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct ClientFile {
    /// librdkafka properties, in file order (apply them before `-X`, which wins).
    pub properties: Vec<Property>,
    /// `bootstrap.servers` of the file, if it has one.
    pub bootstrap_servers: Option<String>,
    /// Java-only properties that were dropped.
    pub ignored: Vec<String>,
}

/// Why a client configuration file cannot be used; never shows a secret.
#[derive(Debug, thiserror::Error)]
pub enum ClientFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line or value is malformed, or a reference cannot be resolved.
    #[error("{path}, line {line}: {reason}", path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line number (of the logical line's start).
        line: usize,
        /// What is wrong (names keys, variables and paths; never a secret's value).
        reason: String,
    },
    /// librdkafka refused a property. Values from a file are never shown (a secret may sit
    /// under a key that does not look like one).
    #[error("{path}, line {line}: librdkafka refuses {key}: {reason}", path = path.display())]
    Property {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The property name.
        key: String,
        /// librdkafka's reason, with the value masked.
        reason: String,
    },
}

impl ClientFile {
    /// Reads and translates `path`.
    pub fn load(path: &Path) -> Result<Self, ClientFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Translates the text of a file named `path` (for messages), with `env` as the
    /// environment.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ClientFileError> {
        let invalid = |line: usize, reason: String| ClientFileError::Invalid {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut out = ClientFile::default();
        for (line, key, raw) in logical_lines(text).map_err(|(l, r)| invalid(l, r))? {
            let value = resolve(&raw, env).map_err(|r| invalid(line, format!("{key}: {r}")))?;
            let mut add = |k: &str, v: &str| -> Result<(), ClientFileError> {
                let p = Property::new(k, v).map_err(|e| ClientFileError::Property {
                    path: path.to_owned(),
                    line,
                    key: k.to_owned(),
                    reason: masked(&e, v),
                })?;
                out.properties.push(p);
                Ok(())
            };
            match key.as_str() {
                "bootstrap.servers" => out.bootstrap_servers = Some(value),
                "sasl.jaas.config" => {
                    for (k, v) in jaas(&value).map_err(|r| invalid(line, r))? {
                        add(k, &v)?;
                    }
                }
                "ssl.truststore.location" => {
                    if is_pem(&value) {
                        add("ssl.ca.location", &value)?;
                    } else {
                        return Err(invalid(
                            line,
                            format!("ssl.truststore.location {value}: librdkafka reads CA certificates as PEM, not JKS or PKCS#12; convert it (keytool -exportcert -rfc) and name the .pem file"),
                        ));
                    }
                }
                "ssl.keystore.location" if value.ends_with(".jks") => {
                    return Err(invalid(
                        line,
                        format!("ssl.keystore.location {value}: librdkafka reads PKCS#12 keystores, not JKS; convert it (keytool -importkeystore -deststoretype PKCS12)"),
                    ));
                }
                "ssl.endpoint.identification.algorithm" if value.is_empty() => {
                    add("ssl.endpoint.identification.algorithm", "none")?;
                }
                k if JAVA_ONLY.contains(&k) || OTHER_TOOLS.iter().any(|p| k.starts_with(p)) => {
                    out.ignored.push(key.clone());
                }
                _ => add(&key, &value)?,
            }
        }
        Ok(out)
    }
}

/// `err`'s reason without `value` in it.
fn masked(err: &ConfigError, value: &str) -> String {
    let reason = match err {
        ConfigError::Rejected { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    if value.is_empty() {
        reason
    } else {
        reason.replace(value, "***")
    }
}

/// Whether a truststore path names a PEM file.
fn is_pem(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    [".pem", ".crt", ".cer"].iter().any(|e| lower.ends_with(e))
}

/// `${env:NAME}` and `${file:PATH}` references in `raw`, resolved.
fn resolve(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "a '${' without its '}'".to_owned())?;
        let reference = &after[..end];
        match reference.split_once(':') {
            Some(("env", name)) => {
                out.push_str(&env(name).ok_or_else(|| {
                    format!("the environment variable {name} (named by ${{env:{name}}}) is not set")
                })?);
            }
            Some(("file", file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {file} (named by ${{file:...}}): {e}"))?;
                out.push_str(text.trim());
            }
            _ => {
                return Err(format!(
                    "unknown reference ${{{reference}}}: expected ${{env:NAME}} or ${{file:PATH}}"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The librdkafka properties of a `sasl.jaas.config` value.
fn jaas(value: &str) -> Result<Vec<(&'static str, String)>, String> {
    let value = value.trim().trim_end_matches(';').trim();
    let (module, rest) = value.split_once(char::is_whitespace).ok_or_else(|| {
        "sasl.jaas.config: expected '<LoginModule class> required key=\"value\" ...;'".to_owned()
    })?;
    let rest = rest.trim_start();
    let rest = ["required", "requisite", "sufficient", "optional"]
        .iter()
        .find_map(|flag| rest.strip_prefix(flag))
        .ok_or_else(|| {
            format!("sasl.jaas.config: expected a control flag (required) after {module}")
        })?;
    let options = jaas_options(rest)?;
    let get = |name: &str| {
        options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let class = module.rsplit('.').next().unwrap_or(module);
    match class {
        "PlainLoginModule" | "ScramLoginModule" => {
            let user = get("username")
                .ok_or_else(|| format!("sasl.jaas.config: {class} needs username=\"...\""))?;
            let password = get("password")
                .ok_or_else(|| format!("sasl.jaas.config: {class} needs password=\"...\""))?;
            Ok(vec![("sasl.username", user), ("sasl.password", password)])
        }
        "OAuthBearerLoginModule" => {
            let mut out = vec![("sasl.oauthbearer.method", "oidc".to_owned())];
            for (java, ours) in [
                ("clientId", "sasl.oauthbearer.client.id"),
                ("clientSecret", "sasl.oauthbearer.client.secret"),
                ("scope", "sasl.oauthbearer.scope"),
            ] {
                if let Some(v) = get(java) {
                    out.push((ours, v));
                }
            }
            if out.len() == 1 {
                // No client credentials: librdkafka's unsecured JWT for development.
                out[0].1 = "default".to_owned();
            }
            Ok(out)
        }
        other => Err(format!(
            "sasl.jaas.config: login module {other} has no librdkafka equivalent (PlainLoginModule, ScramLoginModule and OAuthBearerLoginModule do)"
        )),
    }
}

/// `key="value" key=value ...` of a JAAS entry (values never appear in errors).
fn jaas_options(mut s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok(out);
        }
        let eq = s
            .find('=')
            .ok_or_else(|| "sasl.jaas.config: expected key=\"value\" options".to_owned())?;
        let key = s[..eq].trim().to_owned();
        s = &s[eq + 1..];
        let value;
        if let Some(quoted) = s.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let end = end.ok_or_else(|| {
                format!("sasl.jaas.config: the value of {key} has no closing quote")
            })?;
            value = v;
            s = &quoted[end + 1..];
        } else {
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            value = s[..end].to_owned();
            s = &s[end..];
        }
        out.push((key, value));
    }
}

/// The logical lines of a Java properties text: (line number, key, raw value).
type Lines = Vec<(usize, String, String)>;

fn logical_lines(text: &str) -> Result<Lines, (usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, first)) = lines.next() {
        let start = first.trim_start();
        if start.is_empty() || start.starts_with('#') || start.starts_with('!') {
            continue;
        }
        // A line ending in an odd number of backslashes continues on the next one.
        let mut logical = String::new();
        let mut part = start.to_owned();
        loop {
            let trailing = part.len() - part.trim_end_matches('\\').len();
            if trailing % 2 == 1 {
                part.pop();
                logical.push_str(&part);
                match lines.next() {
                    Some((_, next)) => part = next.trim_start().to_owned(),
                    None => break,
                }
            } else {
                logical.push_str(&part);
                break;
            }
        }
        let (key, value) = split_pair(&logical);
        let key = unescape(&key).map_err(|r| (i + 1, r))?;
        let value = unescape(&value).map_err(|r| (i + 1, format!("{key}: {r}")))?;
        out.push((i + 1, key, value));
    }
    Ok(out)
}

/// Splits at the first unescaped `=`, `:` or whitespace (Java's rule), trimming around it.
fn split_pair(line: &str) -> (String, String) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' | b' ' | b'\t' => break,
            _ => i += 1,
        }
    }
    let i = i.min(line.len());
    let key = line[..i].to_owned();
    let mut rest = line[i..].trim_start_matches([' ', '\t']);
    if let Some(r) = rest.strip_prefix(['=', ':']) {
        rest = r.trim_start_matches([' ', '\t']);
    }
    (key, rest.to_owned())
}

/// Java properties escapes: `\t`, `\n`, `\r`, `\f`, `\uXXXX`, and `\x` for any other `x`.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("invalid \\u escape '\\u{hex}'"))?;
                out.push(code);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<ClientFile, ClientFileError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ClientFile::parse(text, Path::new("client.properties"), &move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn pairs(file: &ClientFile) -> Vec<(String, String)> {
        file.properties
            .iter()
            .map(|p| (p.key().to_owned(), p.value().to_owned()))
            .collect()
    }

    #[test]
    fn a_confluent_cloud_file_becomes_librdkafka_properties() {
        let file = parse(
            "# Required connection configs for Kafka producer, consumer, and admin\n\
             bootstrap.servers=pkc-123.europe-west1.gcp.confluent.cloud:9092\n\
             security.protocol=SASL_SSL\n\
             sasl.mechanisms=PLAIN\n\
             sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \\\n    \
             required username=\"KEY\" password=\"${env:CC_SECRET}\";\n\
             client.dns.lookup=use_all_dns_ips\n\
             session.timeout.ms=45000\n\
             key.serializer=org.apache.kafka.common.serialization.StringSerializer\n",
            &[("CC_SECRET", "s3cr=t")],
        )
        .unwrap();
        assert_eq!(
            file.bootstrap_servers.as_deref(),
            Some("pkc-123.europe-west1.gcp.confluent.cloud:9092")
        );
        assert_eq!(
            pairs(&file),
            [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "PLAIN"),
                ("sasl.username", "KEY"),
                ("sasl.password", "s3cr=t"),
                ("session.timeout.ms", "45000"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(file.ignored, ["client.dns.lookup", "key.serializer"]);
    }

    #[test]
    fn scram_oauth_and_stores_translate() {
        let file = parse(
            "sasl.mechanism: SCRAM-SHA-512\n\
             sasl.jaas.config = org.apache.kafka.common.security.scram.ScramLoginModule required username=\"u\" password=\"p=q; r\";\n\
             ssl.truststore.location=/etc/kafka/ca.pem\n\
             ssl.endpoint.identification.algorithm=\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            pairs(&file),
            [
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "u"),
                ("sasl.password", "p=q; r"),
                ("ssl.ca.location", "/etc/kafka/ca.pem"),
                ("ssl.endpoint.identification.algorithm", "none"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // OIDC itself needs a librdkafka built with libcurl; the translation is checked here.
        let oauth = jaas(
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required clientId=\"id\" clientSecret=\"cs\" scope=\"kafka\";",
        )
        .unwrap();
        assert_eq!(
            oauth,
            [
                ("sasl.oauthbearer.method", "oidc"),
                ("sasl.oauthbearer.client.id", "id"),
                ("sasl.oauthbearer.client.secret", "cs"),
                ("sasl.oauthbearer.scope", "kafka"),
            ]
            .map(|(k, v)| (k, v.to_owned()))
        );
    }

    #[test]
    fn errors_name_the_line_and_never_the_secret() {
        let cases = [
            (
                "client.id=x\nssl.truststore.location=/x/trust.jks\n",
                "line 2",
                "PEM",
            ),
            (
                "sasl.jaas.config=com.example.Custom required password=\"hunter2\";",
                "line 1",
                "no librdkafka equivalent",
            ),
            (
                "sasl.password=${env:NOPE}",
                "environment variable NOPE",
                "not set",
            ),
            ("no.such.thing=hunter2", "line 1", "no.such.thing"),
            ("sasl.password=${vault:x}", "unknown reference", "env:NAME"),
        ];
        for (text, a, b) in cases {
            let err = parse(text, &[]).unwrap_err().to_string();
            assert!(err.contains(a) && err.contains(b), "{text}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn escapes_comments_and_continuations_follow_java() {
        let file = parse(
            "! comment\n  # another\nclient.id = a\\u0062c\\\n   d\nclient.rack\tr1\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            pairs(&file),
            [("client.id", "abcd"), ("client.rack", "r1")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }
}
