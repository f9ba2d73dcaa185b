//! The transparent Kafka protocol proxy (issue 5).
