//! `run`: the worker with a command per task, and `requeue-parked`.

use std::sync::Arc;
use std::time::Duration;

use amqp_worker::http::MetricsServer;
use amqp_worker::{Metrics, Worker, topology};
use tokio::signal::unix::{SignalKind, signal};

use crate::CliError;
use crate::cli::{RequeueArgs, RunArgs};
use crate::command::{CommandHandler, Groups, check_program};

/// On a second signal, how long running commands get between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// `amqp-worker run`.
pub(crate) async fn run(args: RunArgs) -> Result<(), CliError> {
    let config = args.config()?;
    // The whole configuration is checked before anything else happens.
    config.validate()?;
    let mut command = args.command.into_iter();
    let program = command
        .next()
        .ok_or_else(|| CliError::Usage("no command given after --".to_owned()))?;
    // A command that cannot start would fail, and in the end park, every task.
    check_program(&program)
        .map_err(|why| CliError::Usage(format!("the handler command '{program}' {why}")))?;
    let groups = Groups::default();
    let handler = CommandHandler {
        program,
        args: command.collect(),
        on_dead_letter: config.on_dead_letter.clone(),
        groups: groups.clone(),
    };
    let metrics_addr = config.metrics_addr;
    let metrics = Arc::new(Metrics::new());
    let worker = Worker::new(config, handler)?.with_metrics(metrics.clone());
    let shutdown = worker.shutdown();
    let io_err = |what: &str| {
        let what = what.to_owned();
        move |source| CliError::Io { what, source }
    };
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("cannot handle SIGINT"))?;
    let mut term = signal(SignalKind::terminate()).map_err(io_err("cannot handle SIGTERM"))?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        for n in 0.. {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if n == 0 {
                tracing::info!(
                    signal = name,
                    "shutting down: letting running tasks finish (send it again to stop at once)"
                );
                on_signal.trigger();
            } else {
                tracing::warn!(
                    signal = name,
                    running = groups.snapshot().len(),
                    "second signal: ending the running commands and exiting; unfinished tasks are redelivered"
                );
                // No orphans: a command left running would do the task while the broker
                // hands it to another worker.
                groups.terminate_all(KILL_GRACE).await;
                std::process::exit(130);
            }
        }
    });
    if let Some(addr) = metrics_addr {
        let server = MetricsServer::bind(addr, metrics)
            .await
            .map_err(io_err(&format!("cannot serve metrics on {addr}")))?;
        tracing::info!(%addr, "serving /metrics and /healthz");
        tokio::spawn(server.serve(shutdown.clone()));
    }
    let result = worker.run().await;
    shutdown.trigger();
    result?;
    Ok(())
}

/// `amqp-worker requeue-parked`.
pub(crate) async fn requeue_parked(args: RequeueArgs) -> Result<(), CliError> {
    let config = args.topology.config()?;
    config.validate()?;
    let conn = crate::connect(&config.url, "amqp-worker requeue-parked").await?;
    let moved = topology::requeue_parked(&conn, &config, args.limit).await?;
    let _ = conn.close().await;
    report(&format!(
        "moved {moved} task(s) from {} back to {}",
        config.parking_queue(),
        config.queue
    ));
    Ok(())
}

/// The command's result line, on stdout (printing it is the command's job).
#[allow(clippy::print_stdout)]
pub(crate) fn report(line: &str) {
    println!("{line}");
}
