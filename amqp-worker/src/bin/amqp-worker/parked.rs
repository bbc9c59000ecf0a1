//! `parked list` and `parked peek`: the parking queue (or the catch-all of delayed sends)
//! seen without moving anything ([`amqp_worker::parked::peek`]).

use amqp_worker::handler::field_text;
use amqp_worker::parked::{PeekResult, Peeked, peek};
use amqp_worker::publisher::UNROUTABLE_QUEUE;
use amqp_worker::retry;

use crate::CliError;
use crate::cli::{ParkedCommand, ParkedTarget};
use crate::run::report;

/// How much of the last error a `list` line shows.
const ERROR_PREVIEW: usize = 100;

fn header(p: &Peeked, name: &str) -> Option<String> {
    p.properties
        .headers()?
        .get(name)
        .as_ref()
        .and_then(field_text)
}

/// The headers as name-to-text (scalars; arrays and tables in debug form).
fn headers_json(p: &Peeked) -> serde_json::Map<String, serde_json::Value> {
    p.properties
        .headers()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let text = field_text(&v).unwrap_or_else(|| format!("{v:?}"));
                    (String::from_utf8_lossy(&k).into_owned(), text.into())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn to_json(p: &Peeked, with_body: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "position": p.position,
        "message_id": p.message_id(),
        "exchange": p.exchange,
        "routing_key": p.routing_key,
        "attempts": header(p, retry::ATTEMPTS_HEADER),
        "park_reason": header(p, retry::PARK_REASON_HEADER),
        "last_failure_at": header(p, retry::LAST_FAILURE_HEADER),
        "last_error": header(p, retry::LAST_ERROR_HEADER),
        "headers": headers_json(p),
        "body_bytes": p.body.len(),
    });
    if with_body {
        v["body"] = String::from_utf8_lossy(&p.body).into_owned().into();
    }
    v
}

/// The first line of `s`, at most `max` bytes (on a character boundary).
fn preview(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.len() <= max {
        return line.to_owned();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

async fn look(
    target: &ParkedTarget,
    limit: usize,
    keep: impl FnMut(&Peeked) -> bool,
) -> Result<(String, PeekResult), CliError> {
    let config = target.topology.config()?;
    let queue = if target.unroutable {
        UNROUTABLE_QUEUE.to_owned()
    } else {
        config.validate()?;
        config.parking_queue()
    };
    let conn = crate::connect(&config.url, "amqp-worker parked").await?;
    let result = peek(&conn, &queue, limit, keep).await;
    let _ = conn.close().await;
    Ok((queue, result?))
}

/// `amqp-worker parked ...`.
pub(crate) async fn parked(command: ParkedCommand) -> Result<(), CliError> {
    match command {
        ParkedCommand::List(args) => {
            let (queue, seen) = look(&args.target, args.limit, |_| true).await?;
            for p in &seen.kept {
                if args.target.json {
                    report(&to_json(p, false).to_string());
                    continue;
                }
                let field = |name| header(p, name).unwrap_or_else(|| "-".into());
                report(&format!(
                    "{:>5}  {}  attempts {}  {}  last failure {}  {}",
                    p.position,
                    p.message_id().unwrap_or_else(|| "(no id)".into()),
                    field(retry::ATTEMPTS_HEADER),
                    field(retry::PARK_REASON_HEADER),
                    field(retry::LAST_FAILURE_HEADER),
                    preview(&field(retry::LAST_ERROR_HEADER), ERROR_PREVIEW),
                ));
            }
            if !args.target.json {
                let more = u64::from(seen.waiting).saturating_sub(seen.scanned);
                let tail = if more > 0 {
                    format!(" (the first {}; {more} more)", seen.kept.len())
                } else {
                    String::new()
                };
                report(&format!("{} task(s) in {queue}{tail}", seen.waiting));
            }
            Ok(())
        }
        ParkedCommand::Peek(args) => {
            let id = args.message_id.clone();
            let (queue, seen) =
                look(&args.target, 1, |p| p.message_id().as_deref() == Some(&id)).await?;
            let Some(p) = seen.kept.first() else {
                return Err(CliError::NotFound(format!(
                    "no task with message id '{id}' among the {} in {queue}",
                    seen.scanned
                )));
            };
            if args.target.json {
                report(&to_json(p, true).to_string());
                return Ok(());
            }
            report(&format!("position     {} in {queue}", p.position));
            report(&format!("message id   {id}"));
            report(&format!("exchange     '{}'", p.exchange));
            report(&format!("routing key  '{}'", p.routing_key));
            for (k, v) in headers_json(p) {
                report(&format!(
                    "header       {k} = {}",
                    v.as_str().unwrap_or_default()
                ));
            }
            report(&format!("body         {} bytes", p.body.len()));
            report(&String::from_utf8_lossy(&p.body));
            Ok(())
        }
    }
}
