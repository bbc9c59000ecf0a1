//! `publish`: tasks from arguments, a file or stdin, each persistent, mandatory and confirmed.

use std::collections::VecDeque;
use std::io::BufRead;
use std::time::Duration;

use amqp_client::amqp_codec::{BasicProperties, FieldTable, ShortStr};
use amqp_worker::config::arguments_table;
use amqp_worker::{PendingConfirm, PublishError, Publisher, task_properties};

use crate::CliError;
use crate::cli::{PublishArgs, name_value};
use crate::run::report;

/// Confirms awaited before more are sent, so memory stays bounded on large inputs.
const WINDOW: usize = 1000;

/// Failures listed individually before the rest are only counted.
const SHOWN_FAILURES: usize = 10;

/// The non-blank lines of `reader` (`what` names it in errors).
fn read_lines(reader: impl BufRead, what: &str) -> Result<Vec<String>, CliError> {
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(|source| CliError::Io {
            what: format!("cannot read {what}"),
            source,
        })?;
        if !line.trim().is_empty() {
            out.push(line);
        }
    }
    Ok(out)
}

/// The task bodies: the arguments, else the lines of `--file` (`-` or none: stdin), read off
/// the runtime's threads.
async fn bodies(args: &PublishArgs) -> Result<Vec<String>, CliError> {
    if !args.bodies.is_empty() {
        return Ok(args.bodies.clone());
    }
    let file = args.file.clone();
    let read = tokio::task::spawn_blocking(move || match file {
        Some(path) if path.as_os_str() != "-" => {
            let f = std::fs::File::open(&path).map_err(|source| CliError::Io {
                what: format!("cannot open {}", path.display()),
                source,
            })?;
            read_lines(std::io::BufReader::new(f), &path.display().to_string())
        }
        _ => read_lines(std::io::stdin().lock(), "stdin"),
    });
    read.await
        .map_err(|e| CliError::Usage(format!("reading the tasks failed: {e}")))?
}

/// Tallies outcomes and keeps the first few failures to show.
#[derive(Default)]
struct Outcomes {
    ok: usize,
    unroutable: usize,
    nacked: usize,
    other: usize,
    shown: Vec<String>,
}

impl Outcomes {
    /// Counts one task's outcome, keeping its message if it is among the first failures.
    fn record(&mut self, id: &str, result: Result<(), PublishError>) {
        let Err(e) = result else {
            self.ok += 1;
            return;
        };
        match e {
            PublishError::Unroutable { .. } => self.unroutable += 1,
            PublishError::Nacked { .. } => self.nacked += 1,
            _ => self.other += 1,
        }
        if self.shown.len() < SHOWN_FAILURES {
            self.shown.push(format!("task {id}: {e}"));
        }
    }

    /// Tasks not accepted, for any reason.
    fn failed(&self) -> usize {
        self.unroutable + self.nacked + self.other
    }

    /// The end of `publish`: one line if every task of the `total` was confirmed; else the
    /// first failures logged, and an error with the tally and the first failure.
    fn conclude(&self, target: &Target<'_>, prefix: &str, total: usize) -> Result<(), CliError> {
        let (to, delay) = (target.describe(), target.delivered_after());
        if self.failed() == 0 {
            report(&format!(
                "published {} task(s) to {to}{delay}, all confirmed (ids {prefix}-1..{})",
                self.ok, self.ok
            ));
            return Ok(());
        }
        for line in &self.shown {
            tracing::error!("{line}");
        }
        Err(CliError::Publish(format!(
            "{} of {} task(s) to {to} were not accepted ({} returned as unroutable, {} nacked, {} failed otherwise); the first: {}",
            self.failed(),
            total,
            self.unroutable,
            self.nacked,
            self.other,
            self.shown.first().map_or("", String::as_str)
        )))
    }
}

/// `amqp-worker publish`.
pub(crate) async fn publish(args: PublishArgs) -> Result<(), CliError> {
    let bodies = bodies(&args).await?;
    if bodies.is_empty() {
        return Err(CliError::Usage(
            "no tasks to publish (no arguments, empty input)".into(),
        ));
    }
    let template = Template::from_args(&args)?;
    let file = crate::cli::read_config(args.config.as_deref())?;
    let url = args.broker.url.clone().unwrap_or(file.url);
    let routing_key = routing_key(&args, file.queue)?;
    let conn = crate::connect(&url, "amqp-worker publish").await?;
    let publisher = Publisher::open(&conn)
        .await
        .map_err(|e| CliError::Publish(e.to_string()))?;
    let target = Target {
        publisher: &publisher,
        exchange: &args.exchange,
        routing_key: &routing_key,
        delay: args.delay,
    };
    if let Err(e) = target.check().await {
        let _ = conn.close().await;
        return Err(e);
    }
    let outcomes = target.send_all(&template, &bodies).await?;
    let _ = publisher.close().await;
    let _ = conn.close().await;
    outcomes.conclude(&target, &template.prefix, bodies.len())
}

/// The routing key: `--routing-key`; else, with an exchange, the empty key; else the queue
/// (`--queue`, or `queue` from the configuration file `file_queue` came from), through the
/// default exchange.
fn routing_key(args: &PublishArgs, file_queue: String) -> Result<String, CliError> {
    match (&args.routing_key, args.exchange.is_empty()) {
        (Some(key), _) => Ok(key.clone()),
        (None, false) => Ok(String::new()),
        (None, true) => match args.queue.clone().filter(|q| !q.is_empty()) {
            Some(q) => Ok(q),
            None if !file_queue.is_empty() => Ok(file_queue),
            None => Err(CliError::Usage(
                "publish needs a queue: --queue, AMQP_WORKER_QUEUE, `queue` in --config, or --exchange and --routing-key".into(),
            )),
        },
    }
}

/// The longest `--id-prefix`: room for `-` and a 20-digit task number in a 255-byte id.
const ID_PREFIX_MAX: usize = 255 - 21;

/// What every task of one `publish` carries besides its body: an id from a common prefix,
/// the `--header`s and the `--content-type`.
struct Template {
    /// `--id-prefix`, or a random one: task `i` (from 1) is `<prefix>-<i>`.
    prefix: String,
    /// The `--header`s, as an AMQP table.
    headers: FieldTable,
    /// The `--content-type`.
    content_type: Option<ShortStr>,
}

impl Template {
    /// Reads the template from the arguments; a malformed header or an over-long content
    /// type is a usage error.
    fn from_args(args: &PublishArgs) -> Result<Self, CliError> {
        let mut headers = amqp_worker::config::Arguments::new();
        for h in &args.headers {
            let (k, v) = name_value(h)?;
            headers.insert(k, v);
        }
        let headers: FieldTable = arguments_table(&headers);
        let content_type = match &args.content_type {
            Some(ct) => Some(
                ShortStr::try_from(ct.as_str())
                    .map_err(|_| CliError::Usage("--content-type is too long".into()))?,
            ),
            None => None,
        };
        let prefix = args
            .id_prefix
            .clone()
            .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)));
        // `<prefix>-<n>` must fit a short string for any n this run can reach (20 digits).
        if prefix.len() > ID_PREFIX_MAX {
            return Err(CliError::Usage(format!(
                "--id-prefix is {} bytes; message ids are at most 255, so at most {ID_PREFIX_MAX}",
                prefix.len()
            )));
        }
        Ok(Template {
            prefix,
            headers,
            content_type,
        })
    }

    /// The id of the task at `index` (from 0) in the input.
    fn id(&self, index: usize) -> String {
        format!("{}-{}", self.prefix, index + 1)
    }

    /// The properties of task `id`: the worker's task properties (persistent, with the id),
    /// plus the headers and content type if given.
    fn properties(&self, id: &str) -> BasicProperties {
        let mut props = task_properties(id).to_builder();
        if !self.headers.is_empty() {
            props.headers = Some(self.headers.clone());
        }
        props.content_type.clone_from(&self.content_type);
        props
            .build()
            .expect("the id prefix was checked and the other values are short strings already")
    }
}

/// Where the tasks go, and how: now or after `--delay`.
struct Target<'a> {
    /// The confirm-mode publisher.
    publisher: &'a Publisher,
    /// `--exchange`.
    exchange: &'a str,
    /// The routing key ([`routing_key`]).
    routing_key: &'a str,
    /// `--delay`.
    delay: Option<Duration>,
}

impl Target<'_> {
    /// For a delayed send, checks the target first: one that does not exist now would drop
    /// every task when its delay ends, so nothing is published.
    async fn check(&self) -> Result<(), CliError> {
        let Some(delay) = self.delay else {
            return Ok(());
        };
        self.publisher
            .prepare_delayed(self.exchange, self.routing_key, delay)
            .await
            .map_err(|e| CliError::Publish(format!("nothing was published: {e}")))
    }

    /// Sends every body in order, with at most [`WINDOW`] confirms awaited at a time, and
    /// tallies the outcomes. A connection or channel error stops publishing at once: what
    /// follows would fail the same way.
    async fn send_all(&self, template: &Template, bodies: &[String]) -> Result<Outcomes, CliError> {
        let mut pending: VecDeque<(String, PendingConfirm)> = VecDeque::new();
        let mut outcomes = Outcomes::default();
        for (i, body) in bodies.iter().enumerate() {
            let id = template.id(i);
            match self.send(&template.properties(&id), body.clone()).await {
                Ok(p) => pending.push_back((id, p)),
                Err(e) if e.is_connection_error() || e.is_channel_error() => {
                    return Err(CliError::Publish(format!(
                        "publishing stopped after {} of {} tasks: {e}",
                        i,
                        bodies.len()
                    )));
                }
                Err(e) => outcomes.record(&id, Err(e)),
            }
            if pending.len() >= WINDOW
                && let Some((id, p)) = pending.pop_front()
            {
                outcomes.record(&id, p.wait().await);
            }
        }
        while let Some((id, p)) = pending.pop_front() {
            outcomes.record(&id, p.wait().await);
        }
        Ok(outcomes)
    }

    /// Sends one task, now or delayed.
    async fn send(
        &self,
        props: &BasicProperties,
        body: String,
    ) -> Result<PendingConfirm, PublishError> {
        match self.delay {
            Some(delay) => {
                self.publisher
                    .send_delayed(self.exchange, self.routing_key, delay, props, body)
                    .await
            }
            None => {
                self.publisher
                    .send(self.exchange, self.routing_key, props, body)
                    .await
            }
        }
    }

    /// The target as the summary names it.
    fn describe(&self) -> String {
        format!(
            "exchange '{}' with routing key '{}'",
            self.exchange, self.routing_key
        )
    }

    /// `, delivered after <delay>` for a delayed send, else nothing.
    fn delivered_after(&self) -> String {
        self.delay
            .map(|d| {
                format!(
                    ", delivered after {}",
                    amqp_worker::config::format_duration(d)
                )
            })
            .unwrap_or_default()
    }
}
