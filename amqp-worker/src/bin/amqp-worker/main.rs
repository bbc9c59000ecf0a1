//! `amqp-worker`: run a command per RabbitMQ task reliably, publish tasks, requeue parked
//! tasks, or watch a demonstration. See `amqp-worker --help`.
//!
//! Errors end the process with one sentence on stderr (`amqp-worker: ...`, or with
//! `--log-format json` one JSON record) and a non-zero status: 2 for bad usage or
//! configuration, 1 for everything else.

#![forbid(unsafe_code)]

mod cli;
mod command;
mod demo;
mod parked;
mod publish;
mod run;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use amqp_worker::{ConfigError, WorkerError};
use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, LogFormat};

/// Why the command failed; printed as one sentence.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad configuration.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Bad usage not caught by the argument parser.
    #[error("{0}")]
    Usage(String),
    /// The worker or a broker operation failed.
    #[error("{0}")]
    Worker(#[from] WorkerError),
    /// A broker operation outside the worker failed.
    #[error("{what}: {source}")]
    Broker {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: amqp_client::Error,
    },
    /// Some published tasks were not accepted.
    #[error("{0}")]
    Publish(String),
    /// A local I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// What was asked for is not there.
    #[error("{0}")]
    NotFound(String),
    /// The demo lost tasks or did not finish.
    #[error("{0}")]
    Demo(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Usage(_) | Self::Worker(WorkerError::Config(_)) => 2,
            _ => 1,
        }
    }
}

fn init_logging(format: LogFormat, level: Option<&str>, default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or(default)))
        .unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// True if the command line or the environment asks for JSON logs (read before the
/// arguments parse, so that an argument error is JSON too).
fn wants_json() -> bool {
    let mut args = std::env::args().skip(1);
    let mut from_args = None;
    while let Some(a) = args.next() {
        if a == "--" {
            break;
        }
        if let Some(v) = a.strip_prefix("--log-format=") {
            from_args = Some(v == "json");
        } else if a == "--log-format" {
            from_args = args.next().map(|v| v == "json");
        }
    }
    from_args.unwrap_or_else(|| std::env::var("AMQP_WORKER_LOG_FORMAT").is_ok_and(|v| v == "json"))
}

/// Ends the process with `message` on stderr: one `amqp-worker: ...` sentence, or with JSON
/// logs one JSON record like the log lines (level ERROR, the sentence as `message`).
fn fatal(json: bool, message: &str, code: u8) -> ExitCode {
    if json {
        use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
        let mut timestamp = String::new();
        let _ = SystemTime.format_time(&mut tracing_subscriber::fmt::format::Writer::new(
            &mut timestamp,
        ));
        let record = serde_json::json!({
            "timestamp": timestamp,
            "level": "ERROR",
            "fields": { "message": format!("amqp-worker: {message}"), "exit_code": code },
            "target": "amqp_worker",
        });
        eprintln!("{record}");
    } else {
        eprintln!("amqp-worker: {message}");
    }
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let json = wants_json();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !json || !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            return fatal(json, first, 2);
        }
    };
    // The demo draws a progress line on stderr and parks tasks on purpose: only errors
    // interrupt it by default.
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "error"
    } else {
        "info"
    };
    let json = cli.log_format == LogFormat::Json;
    init_logging(cli.log_format, cli.log_level.as_deref(), default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(json, &format!("cannot start the async runtime: {e}"), 1),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Publish(args) => publish::publish(args).await,
            Command::RequeueParked(args) => run::requeue_parked(args).await,
            Command::Parked(command) => parked::parked(command).await,
            Command::Demo(args) => demo::demo(args).await,
        }
    });
    // Stdin readers or abandoned handlers must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(json, &e.to_string(), e.exit_code()),
    }
}

/// Connects for a one-off command (publish, requeue, demo), bounded by 10 s.
pub(crate) async fn connect(url: &str, name: &str) -> Result<amqp_client::Connection, CliError> {
    let mut config = amqp_client::ConnectionConfig::from_uri(url)
        .map_err(|e| CliError::Usage(format!("invalid broker URL: {e}")))?;
    config.connection_name = Some(name.to_owned());
    config.connection_timeout = Duration::from_secs(10);
    let address = config.address();
    amqp_client::Connection::connect_with(config)
        .await
        .map_err(|source| CliError::Broker {
            what: format!("cannot connect to the broker at {address}"),
            source,
        })
}
