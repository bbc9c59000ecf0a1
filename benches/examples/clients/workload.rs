//! The workloads of the clients bench, named by its client modules (`ours.rs`, `lapin.rs`,
//! `amqprs.rs`); the scale bench includes the same modules and this file with them.

use clap::ValueEnum;

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// Publish with confirms.
    Publish,
    /// Consume a pre-filled queue with manual acks.
    Consume,
    /// Publish and consume at once on one connection.
    Both,
    /// Publish-to-consume latency at a fixed rate.
    Latency,
}

impl Workload {
    /// The name on the command line and in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Consume => "consume",
            Self::Both => "both",
            Self::Latency => "latency",
        }
    }
}
