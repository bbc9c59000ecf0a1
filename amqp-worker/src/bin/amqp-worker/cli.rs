//! Command-line arguments (clap derive) and how they become a [`WorkerConfig`]: defaults, then
//! the `--config` TOML file, then environment variables and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amqp_worker::config::{ArgValue, BindingSpec, ExchangeSpec, parse_duration};
use amqp_worker::{ConfigError, WorkerConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::CliError;

/// A reliable RabbitMQ task worker: manual acks, publisher confirms, retry tiers through
/// delay queues, a parking queue, reconnection and graceful shutdown.
#[derive(Debug, Parser)]
#[command(name = "amqp-worker", version)]
pub(crate) struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "AMQP_WORKER_LOG_FORMAT",
        default_value = "human"
    )]
    pub(crate) log_format: LogFormat,
    /// Log level or filter (e.g. `debug`, `amqp_worker=debug,warn`); RUST_LOG wins if set.
    #[arg(long, global = true, env = "AMQP_WORKER_LOG_LEVEL")]
    pub(crate) log_level: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `run --help`: what the command's exit code means.
const RUN_LONG_ABOUT: &str = "Consume a queue and run COMMAND per task: the body on stdin, the \
properties and headers in AMQP_* environment variables, its output logged with the task id.

Exit codes of COMMAND:
  0          ack the task
  65         do not retry: park the task now (x-park-reason: rejected); 65 is EX_DATAERR of \
sysexits(3), \"the input data was incorrect\"
  any other  (or running past --handler-timeout) the attempt failed: retried after the next \
delay, parked after --max-attempts (x-park-reason: attempts-exhausted)

A parked task's x-last-error keeps the last 1 KiB of COMMAND's stderr. A command that does not \
exist or is not executable makes run exit 2 at start.";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Consume a queue and run a command per task (body on stdin, properties and headers in
    /// AMQP_* environment variables; exit 0 acks, 65 parks at once, other non-zero or timeout
    /// retries).
    #[command(long_about = RUN_LONG_ABOUT)]
    Run(RunArgs),
    /// Publish tasks (from arguments, --file, or stdin one per line) with confirms; fails if
    /// any was unroutable or nacked.
    Publish(PublishArgs),
    /// Move parked (dead-lettered) tasks back to the work queue as fresh first attempts.
    RequeueParked(RequeueArgs),
    /// Look at parked tasks without moving them (`list`, `peek <message-id>`).
    #[command(subcommand)]
    Parked(ParkedCommand),
    /// Run a self-contained demonstration against the broker at AMQP_URL.
    Demo(DemoArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Where the broker is.
#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// Broker URI [default: amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(long, env = "AMQP_URL")]
    pub(crate) url: Option<String>,
}

/// What to declare and how to retry.
#[derive(Debug, Args)]
pub(crate) struct TopologyArgs {
    /// TOML configuration file (flags and environment variables override it).
    #[arg(long, env = "AMQP_WORKER_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    /// The work queue.
    #[arg(long, env = "AMQP_WORKER_QUEUE")]
    pub(crate) queue: Option<String>,
    /// Queue type: classic or quorum [default: classic].
    #[arg(long, env = "AMQP_WORKER_QUEUE_TYPE")]
    pub(crate) queue_type: Option<String>,
    /// Quorum queues: deliveries after which the broker parks a message itself.
    #[arg(long, env = "AMQP_WORKER_DELIVERY_LIMIT")]
    pub(crate) delivery_limit: Option<u32>,
    /// An exchange to declare and bind the work queue to.
    #[arg(long, env = "AMQP_WORKER_EXCHANGE")]
    pub(crate) exchange: Option<String>,
    /// Type of --exchange: direct, fanout, topic, headers [default: direct].
    #[arg(long, env = "AMQP_WORKER_EXCHANGE_TYPE")]
    pub(crate) exchange_type: Option<String>,
    /// Binding key of the work queue to --exchange (repeatable) [default: the queue name].
    #[arg(
        long = "binding-key",
        env = "AMQP_WORKER_BINDING_KEYS",
        value_delimiter = ','
    )]
    pub(crate) binding_keys: Vec<String>,
    /// Binding argument NAME=VALUE or NAME:TYPE=VALUE for --exchange (repeatable), e.g.
    /// x-match=all for headers.
    #[arg(
        long = "binding-arg",
        env = "AMQP_WORKER_BINDING_ARGS",
        value_delimiter = ',',
        long_help = format!("Binding argument for --exchange (repeatable, or comma-separated), e.g. x-match=all for a headers exchange. {TYPED_VALUE_HELP}")
    )]
    pub(crate) binding_args: Vec<String>,
    /// Retry delays, comma-separated [default: 1s,10s,60s].
    #[arg(long, env = "AMQP_WORKER_RETRY_DELAYS", value_delimiter = ',', value_parser = duration)]
    pub(crate) retry_delays: Vec<Duration>,
    /// Attempts before a task is parked [default: 4].
    #[arg(long, env = "AMQP_WORKER_MAX_ATTEMPTS")]
    pub(crate) max_attempts: Option<u32>,
}

/// `run` options.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) topology: TopologyArgs,
    /// Handlers running at once [default: 8].
    #[arg(long, env = "AMQP_WORKER_CONCURRENCY")]
    pub(crate) concurrency: Option<usize>,
    /// Unacknowledged deliveries the broker sends ahead [default: 16].
    #[arg(long, env = "AMQP_WORKER_PREFETCH")]
    pub(crate) prefetch: Option<u16>,
    /// A task running longer fails its attempt (its command is killed) [default: 60s].
    #[arg(long, env = "AMQP_WORKER_HANDLER_TIMEOUT", value_parser = duration)]
    pub(crate) handler_timeout: Option<Duration>,
    /// Exit non-zero after this long without a broker connection [default: 5m].
    #[arg(long, env = "AMQP_WORKER_GIVE_UP_AFTER", value_parser = duration)]
    pub(crate) give_up_after: Option<Duration>,
    /// On SIGINT/SIGTERM, how long running tasks may take to finish [default: 30s].
    #[arg(long, env = "AMQP_WORKER_SHUTDOWN_TIMEOUT", value_parser = duration)]
    pub(crate) shutdown_timeout: Option<Duration>,
    /// Connection name shown by the broker.
    #[arg(long, env = "AMQP_WORKER_CONNECTION_NAME")]
    pub(crate) connection_name: Option<String>,
    /// Serve /metrics and /healthz on this address, e.g. 127.0.0.1:9090.
    #[arg(long, env = "AMQP_WORKER_METRICS_ADDR")]
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Shell command run (sh -c) when a task is parked; gets the task on stdin and
    /// AMQP_LAST_ERROR, AMQP_ATTEMPTS, AMQP_PARK_REASON, ... in its environment.
    #[arg(long, env = "AMQP_WORKER_ON_DEAD_LETTER")]
    pub(crate) on_dead_letter: Option<String>,
    /// Take up to this percentage (0-90) off each retry delay at random [default: 0].
    #[arg(long, env = "AMQP_WORKER_RETRY_JITTER_PERCENT")]
    pub(crate) retry_jitter_percent: Option<u8>,
    /// First reconnect delay; doubles up to --reconnect-max-delay [default: 100ms].
    #[arg(long, env = "AMQP_WORKER_RECONNECT_MIN_DELAY", value_parser = duration)]
    pub(crate) reconnect_min_delay: Option<Duration>,
    /// Largest reconnect delay [default: 10s].
    #[arg(long, env = "AMQP_WORKER_RECONNECT_MAX_DELAY", value_parser = duration)]
    pub(crate) reconnect_max_delay: Option<Duration>,
    /// How often the parking queue's depth is read for /metrics [default: 15s].
    #[arg(long, env = "AMQP_WORKER_QUEUE_DEPTH_INTERVAL", value_parser = duration)]
    pub(crate) queue_depth_interval: Option<Duration>,
    /// The command to run per task, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub(crate) command: Vec<String>,
}

/// `publish` options.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// TOML configuration file: its `url` and `queue` are the defaults of --url and --queue.
    #[arg(long, env = "AMQP_WORKER_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    /// Queue to publish to through the default exchange (the same as --routing-key QUEUE);
    /// used when neither --exchange nor --routing-key is given [default: `queue` of --config].
    #[arg(long, env = "AMQP_WORKER_QUEUE")]
    pub(crate) queue: Option<String>,
    /// Exchange to publish to [default: the default exchange ""].
    #[arg(long, default_value = "")]
    pub(crate) exchange: String,
    /// Routing key [default: with the default exchange, --queue; with --exchange, empty].
    #[arg(long)]
    pub(crate) routing_key: Option<String>,
    /// Read tasks from this file, one per line (`-` for stdin).
    #[arg(long, conflicts_with = "bodies")]
    pub(crate) file: Option<PathBuf>,
    /// Deliver after this delay (e.g. 30s), through a delay queue.
    #[arg(long, value_parser = duration)]
    pub(crate) delay: Option<Duration>,
    /// Header NAME=VALUE (a string) or NAME:TYPE=VALUE (str, int, bool) on every task
    /// (repeatable).
    #[arg(long = "header", long_help = format!("Header on every task (repeatable). {TYPED_VALUE_HELP}"))]
    pub(crate) headers: Vec<String>,
    /// Content type of the tasks.
    #[arg(long)]
    pub(crate) content_type: Option<String>,
    /// Message id prefix; each task gets `<prefix>-<n>` [default: random].
    #[arg(long)]
    pub(crate) id_prefix: Option<String>,
    /// Task bodies; without them (and without --file) tasks are read from stdin.
    pub(crate) bodies: Vec<String>,
}

/// `requeue-parked` options.
#[derive(Debug, Args)]
pub(crate) struct RequeueArgs {
    #[command(flatten)]
    pub(crate) topology: TopologyArgs,
    /// Move at most this many [default: all parked when it starts].
    #[arg(long)]
    pub(crate) limit: Option<u64>,
}

/// `parked` subcommands. Both take the messages from the head without ack on a channel of
/// their own and close it at the end, so the broker puts every one back in its place: nothing
/// is moved, lost or reordered (they come back marked redelivered).
#[derive(Debug, Subcommand)]
pub(crate) enum ParkedCommand {
    /// One line per parked task: position, message id, attempts, reason, last failure, the
    /// start of the last error.
    List(ParkedListArgs),
    /// Everything about one parked task: properties, headers, body.
    Peek(ParkedPeekArgs),
}

/// Which queue `parked` looks at.
#[derive(Debug, Args)]
pub(crate) struct ParkedTarget {
    #[command(flatten)]
    pub(crate) topology: TopologyArgs,
    /// Look at `amqp-worker.unroutable` (delayed sends whose target vanished) instead.
    #[arg(long)]
    pub(crate) unroutable: bool,
    /// One JSON object per task instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `parked list` options.
#[derive(Debug, Args)]
pub(crate) struct ParkedListArgs {
    #[command(flatten)]
    pub(crate) target: ParkedTarget,
    /// Show at most this many, from the head.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: usize,
}

/// `parked peek` options.
#[derive(Debug, Args)]
pub(crate) struct ParkedPeekArgs {
    #[command(flatten)]
    pub(crate) target: ParkedTarget,
    /// The message id of the task.
    pub(crate) message_id: String,
}

/// `demo` options.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    /// Tasks to publish.
    #[arg(long, default_value_t = 3000)]
    pub(crate) count: u32,
    /// Handlers running at once.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Give up (and report what is missing as lost) after this long.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub(crate) timeout: Duration,
}

/// The typed forms of `--header` and `--binding-arg`, for `--help`.
pub(crate) const TYPED_VALUE_HELP: &str = "NAME=VALUE is a string (zip=02134 stays \"02134\"); \
    NAME:TYPE=VALUE gives a type: str, int (64-bit signed), bool (true or false), \
    e.g. count:int=5, urgent:bool=true. A name with a colon needs the type: a:b:str=c";

/// `NAME=VALUE` (a string) or `NAME:TYPE=VALUE` with TYPE `str`, `int` or `bool`: values are
/// never guessed, so `zip=02134` stays the string `"02134"`.
pub(crate) fn name_value(s: &str) -> Result<(String, ArgValue), CliError> {
    let (name, v) = s
        .split_once('=')
        .ok_or_else(|| CliError::Usage(format!("'{s}' is not NAME=VALUE or NAME:TYPE=VALUE")))?;
    let (name, kind) = match name.rsplit_once(':') {
        Some((n, kind)) => (n, Some(kind)),
        None => (name, None),
    };
    if name.is_empty() {
        return Err(CliError::Usage(format!("'{s}' has an empty name")));
    }
    let bad = |what: &str| CliError::Usage(format!("'{s}': '{v}' is not {what}"));
    let value = match kind {
        None | Some("str") => ArgValue::Str(v.to_owned()),
        Some("int") => ArgValue::Int(v.parse().map_err(|_| bad("a 64-bit integer"))?),
        Some("bool") => ArgValue::Bool(v.parse().map_err(|_| bad("true or false"))?),
        Some(other) => {
            return Err(CliError::Usage(format!(
                "'{s}': unknown type '{other}' (expected str, int or bool; a name with a colon needs the type, e.g. {name}:{other}:str={v})"
            )));
        }
    };
    Ok((name.to_owned(), value))
}

/// The configuration in the TOML file at `path` (the defaults without one), not yet
/// validated when it lacks only the queue (a flag may give it).
pub(crate) fn read_config(path: Option<&Path>) -> Result<WorkerConfig, CliError> {
    let Some(path) = path else {
        return Ok(WorkerConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Io {
        what: format!("cannot read configuration file {}", path.display()),
        source: e,
    })?;
    match WorkerConfig::from_toml_named(&text, &path.display().to_string()) {
        Ok(c) => Ok(c),
        // The queue may come from a flag: validate after the overrides.
        Err(ConfigError::NoQueue) => toml_without_validation(&text),
        Err(e) => Err(e.into()),
    }
}

impl RunArgs {
    /// The whole configuration: the file's, then environment variables and flags; not yet
    /// validated.
    pub(crate) fn config(&self) -> Result<WorkerConfig, CliError> {
        let mut c = self.topology.config()?;
        let set = |to: &mut Duration, from: Option<Duration>| {
            if let Some(d) = from {
                *to = d;
            }
        };
        if let Some(n) = self.concurrency {
            c.concurrency = n;
        }
        if let Some(n) = self.prefetch {
            c.prefetch = n;
        }
        if let Some(n) = self.retry_jitter_percent {
            c.retry_jitter_percent = n;
        }
        set(&mut c.handler_timeout, self.handler_timeout);
        set(&mut c.give_up_after, self.give_up_after);
        set(&mut c.shutdown_timeout, self.shutdown_timeout);
        set(&mut c.reconnect_min_delay, self.reconnect_min_delay);
        set(&mut c.reconnect_max_delay, self.reconnect_max_delay);
        set(&mut c.queue_depth_interval, self.queue_depth_interval);
        if self.connection_name.is_some() {
            c.connection_name.clone_from(&self.connection_name);
        }
        if self.metrics_addr.is_some() {
            c.metrics_addr = self.metrics_addr;
        }
        if self.on_dead_letter.is_some() {
            c.on_dead_letter.clone_from(&self.on_dead_letter);
        }
        Ok(c)
    }
}

impl TopologyArgs {
    /// The file's configuration (or the defaults) with these flags applied, not yet validated.
    pub(crate) fn config(&self) -> Result<WorkerConfig, CliError> {
        let mut c = read_config(self.config.as_deref())?;
        if let Some(url) = &self.broker.url {
            c.url.clone_from(url);
        }
        if let Some(q) = &self.queue {
            c.queue.clone_from(q);
        }
        if let Some(t) = &self.queue_type {
            c.queue_type = t.parse()?;
        }
        if self.delivery_limit.is_some() {
            c.delivery_limit = self.delivery_limit;
        }
        if !self.retry_delays.is_empty() {
            c.retry_delays.clone_from(&self.retry_delays);
        }
        if let Some(n) = self.max_attempts {
            c.max_attempts = n;
        }
        match (&self.exchange, &self.exchange_type) {
            (Some(x), kind) => {
                let kind = kind.as_deref().unwrap_or("direct");
                c.exchanges.push(ExchangeSpec::new(x, kind));
                let keys = if self.binding_keys.is_empty() {
                    vec![c.queue.clone()]
                } else {
                    self.binding_keys.clone()
                };
                for key in keys {
                    let mut b = BindingSpec::to_work_queue(x, key);
                    for arg in &self.binding_args {
                        let (k, v) = name_value(arg)?;
                        b.arguments.insert(k, v);
                    }
                    c.bindings.push(b);
                }
            }
            (None, Some(_)) => {
                return Err(CliError::Usage(
                    "--exchange-type needs --exchange".to_owned(),
                ));
            }
            (None, None) => {}
        }
        Ok(c)
    }
}

fn toml_without_validation(text: &str) -> Result<WorkerConfig, CliError> {
    // Same parse as from_toml_named, which only failed validation: cannot fail here.
    toml::from_str(text).map_err(|e| CliError::Usage(e.message().to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The README's flag table: flag to (environment variable cell, TOML key cell).
    fn readme_table() -> std::collections::BTreeMap<String, (String, String)> {
        include_str!("../../../README.md")
            .lines()
            .filter(|l| l.starts_with("| `--"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let flag = cells[1]
                    .trim_matches('`')
                    .trim_start_matches("--")
                    .to_owned();
                (flag, (cells[2].to_owned(), cells[3].to_owned()))
            })
            .collect()
    }

    #[test]
    fn every_run_flag_has_an_env_var_a_toml_key_and_a_readme_row() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        let run = cli.find_subcommand("run").unwrap();
        let table = readme_table();
        let mut flags = Vec::new();
        for arg in run.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            flags.push(long.to_owned());
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{long} has no environment variable"))
                .to_string_lossy()
                .into_owned();
            let expected_env = match long {
                "url" => "AMQP_URL".to_owned(),
                "binding-key" => "AMQP_WORKER_BINDING_KEYS".to_owned(),
                "binding-arg" => "AMQP_WORKER_BINDING_ARGS".to_owned(),
                _ => format!("AMQP_WORKER_{}", long.replace('-', "_").to_uppercase()),
            };
            assert_eq!(env, expected_env, "--{long}");
            let (env_cell, key_cell) = table
                .get(long)
                .unwrap_or_else(|| panic!("--{long} is not in the README's flag table"));
            assert_eq!(env_cell, &format!("`{env}`"), "--{long}");
            let key = match long {
                "config" | "log-format" | "log-level" => {
                    assert!(key_cell.starts_with('—'), "--{long}: {key_cell}");
                    continue;
                }
                "exchange" | "exchange-type" => "exchanges".to_owned(),
                "binding-key" | "binding-arg" => "bindings".to_owned(),
                _ => long.replace('-', "_"),
            };
            let shown = if matches!(key.as_str(), "exchanges" | "bindings") {
                format!("`[[{key}]]`")
            } else {
                format!("`{key}`")
            };
            assert!(
                key_cell.starts_with(&shown),
                "--{long}: {key_cell}, expected {shown}"
            );
            // The file accepts the key (a wrong value type, never an unknown field).
            let err = WorkerConfig::from_toml(&format!("queue = \"q\"\n{key} = {{ bogus = 1 }}\n"))
                .unwrap_err()
                .to_string();
            assert!(!err.contains("unknown field"), "--{long}: {err}");
        }
        // And the table lists nothing that is not a flag.
        for flag in table.keys() {
            assert!(
                flags.contains(flag),
                "the README lists --{flag}, which run does not have"
            );
        }
    }

    #[test]
    fn run_help_documents_the_park_now_exit_code() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains(&format!(
                "  {}         do not retry",
                crate::command::PARK_NOW_EXIT_CODE
            )),
            "{help}"
        );
    }

    #[test]
    fn publish_takes_the_queue_and_the_config_file() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        let publish = cli.find_subcommand("publish").unwrap();
        for (long, env) in [
            ("queue", "AMQP_WORKER_QUEUE"),
            ("config", "AMQP_WORKER_CONFIG"),
        ] {
            let arg = publish
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("publish has no --{long}"));
            assert!(!arg.is_hide_set(), "--{long} is hidden");
            assert_eq!(arg.get_env().unwrap(), env);
        }
    }

    #[test]
    fn values_are_strings_unless_typed() {
        let v = |s: &str| name_value(s).map_err(|e| e.to_string());
        assert_eq!(
            v("zip=02134"),
            Ok(("zip".into(), ArgValue::Str("02134".into())))
        );
        assert_eq!(
            v("ok=true"),
            Ok(("ok".into(), ArgValue::Str("true".into())))
        );
        assert_eq!(v("n:int=-5"), Ok(("n".into(), ArgValue::Int(-5))));
        assert_eq!(v("f:bool=true"), Ok(("f".into(), ArgValue::Bool(true))));
        assert_eq!(
            v("a:b:str=c=d"),
            Ok(("a:b".into(), ArgValue::Str("c=d".into())))
        );
        assert!(v("n:int=x").unwrap_err().contains("not a 64-bit integer"));
        assert!(v("a:b=c").unwrap_err().contains("unknown type 'b'"));
        assert!(v("novalue").is_err());
    }
}
