//! `publish`: tasks from arguments, a file or stdin, each persistent, mandatory and confirmed.

use std::collections::VecDeque;
use std::io::BufRead;

use amqp_client::amqp_codec::{FieldTable, ShortStr};
use amqp_worker::config::arguments_table;
use amqp_worker::{PendingConfirm, PublishError, Publisher, task_properties};

use crate::CliError;
use crate::cli::{PublishArgs, name_value};
use crate::run::report;

/// Confirms awaited before more are sent, so memory stays bounded on large inputs.
const WINDOW: usize = 1000;

/// Failures listed individually before the rest are only counted.
const SHOWN_FAILURES: usize = 10;

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

    fn failed(&self) -> usize {
        self.unroutable + self.nacked + self.other
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
    let file = crate::cli::read_config(args.config.as_deref())?;
    let url = args.broker.url.clone().unwrap_or(file.url);
    let routing_key = match (&args.routing_key, args.exchange.is_empty()) {
        (Some(key), _) => key.clone(),
        (None, false) => String::new(),
        (None, true) => match args.queue.clone().filter(|q| !q.is_empty()) {
            Some(q) => q,
            None if !file.queue.is_empty() => file.queue,
            None => {
                return Err(CliError::Usage(
                    "publish needs a queue: --queue, AMQP_WORKER_QUEUE, `queue` in --config, or --exchange and --routing-key".into(),
                ));
            }
        },
    };
    let routing_key = routing_key.as_str();
    let conn = crate::connect(&url, "amqp-worker publish").await?;
    let publisher = Publisher::open(&conn)
        .await
        .map_err(|e| CliError::Publish(e.to_string()))?;
    if let Some(delay) = args.delay {
        // A target that does not exist now would drop every task when its delay ends.
        if let Err(e) = publisher
            .prepare_delayed(&args.exchange, routing_key, delay)
            .await
        {
            let _ = conn.close().await;
            return Err(CliError::Publish(format!("nothing was published: {e}")));
        }
    }
    let mut pending: VecDeque<(String, PendingConfirm)> = VecDeque::new();
    let mut outcomes = Outcomes::default();
    for (i, body) in bodies.iter().enumerate() {
        let id = format!("{prefix}-{}", i + 1);
        let mut props = task_properties(&id).to_builder();
        if !headers.is_empty() {
            props.headers = Some(headers.clone());
        }
        props.content_type.clone_from(&content_type);
        let props = props.build();
        let sent = match args.delay {
            Some(delay) => {
                publisher
                    .send_delayed(&args.exchange, routing_key, delay, &props, body.clone())
                    .await
            }
            None => {
                publisher
                    .send(&args.exchange, routing_key, &props, body.clone())
                    .await
            }
        };
        match sent {
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
    let _ = publisher.close().await;
    let _ = conn.close().await;
    let target = format!(
        "exchange '{}' with routing key '{}'",
        args.exchange, routing_key
    );
    let delay = args
        .delay
        .map(|d| {
            format!(
                ", delivered after {}",
                amqp_worker::config::format_duration(d)
            )
        })
        .unwrap_or_default();
    if outcomes.failed() == 0 {
        report(&format!(
            "published {} task(s) to {target}{delay}, all confirmed (ids {prefix}-1..{})",
            outcomes.ok, outcomes.ok
        ));
        return Ok(());
    }
    for line in &outcomes.shown {
        tracing::error!("{line}");
    }
    Err(CliError::Publish(format!(
        "{} of {} task(s) to {target} were not accepted ({} returned as unroutable, {} nacked, {} failed otherwise); the first: {}",
        outcomes.failed(),
        bodies.len(),
        outcomes.unroutable,
        outcomes.nacked,
        outcomes.other,
        outcomes.shown.first().map_or("", String::as_str)
    )))
}
