//! `run`: the worker with a command per task, and `requeue-parked`.

use std::process::Stdio;
use std::sync::Arc;

use amqp_worker::http::MetricsServer;
use amqp_worker::{DeadLetter, Handler, HandlerError, Metrics, Task, Worker, topology};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::CliError;
use crate::cli::{RequeueArgs, RunArgs};

/// Runs the configured command per task.
struct CommandHandler {
    program: String,
    args: Vec<String>,
    on_dead_letter: Option<String>,
}

/// `AMQP_HEADER_<NAME>`: the header name upper-cased, anything but letters and digits as `_`.
fn header_var(name: &str) -> String {
    let mut var = String::from("AMQP_HEADER_");
    var.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    var
}

/// The task's properties and scalar headers as environment variables.
fn task_env(task: &Task) -> Vec<(String, String)> {
    let p = &task.properties;
    let text = |s: Option<amqp_client::amqp_codec::ShortStr>| {
        s.map(|s| String::from_utf8_lossy(&s).into_owned())
    };
    let mut env = vec![
        ("AMQP_EXCHANGE".to_owned(), Some(task.exchange.clone())),
        (
            "AMQP_ROUTING_KEY".to_owned(),
            Some(task.routing_key.clone()),
        ),
        ("AMQP_ATTEMPT".to_owned(), Some(task.attempt.to_string())),
        (
            "AMQP_REDELIVERED".to_owned(),
            Some(task.redelivered.to_string()),
        ),
        (
            "AMQP_ORIGINAL_EXCHANGE".to_owned(),
            Some(task.original_exchange()),
        ),
        (
            "AMQP_ORIGINAL_ROUTING_KEY".to_owned(),
            Some(task.original_routing_key()),
        ),
        ("AMQP_MESSAGE_ID".to_owned(), text(p.message_id())),
        ("AMQP_CORRELATION_ID".to_owned(), text(p.correlation_id())),
        ("AMQP_REPLY_TO".to_owned(), text(p.reply_to())),
        ("AMQP_CONTENT_TYPE".to_owned(), text(p.content_type())),
        (
            "AMQP_CONTENT_ENCODING".to_owned(),
            text(p.content_encoding()),
        ),
        ("AMQP_TYPE".to_owned(), text(p.kind())),
        ("AMQP_APP_ID".to_owned(), text(p.app_id())),
        (
            "AMQP_TIMESTAMP".to_owned(),
            p.timestamp().map(|t| t.to_string()),
        ),
    ];
    for (name, value) in &task.headers() {
        let name = String::from_utf8_lossy(&name).into_owned();
        env.push((header_var(&name), amqp_worker::handler::field_text(&value)));
    }
    env.into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.contains('\0')).map(|v| (k, v)))
        .collect()
}

/// Spawns `cmd` with the task on stdin and waits for it. The child gets its own process
/// group, so a Ctrl-C meant for the worker does not kill the tasks it lets finish; it is
/// killed if the handler is dropped (timeout).
async fn run_child(
    mut cmd: tokio::process::Command,
    what: &str,
    task: &Task,
    extra_env: Vec<(String, String)>,
) -> Result<std::process::ExitStatus, HandlerError> {
    cmd.envs(task_env(task))
        .envs(extra_env)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| HandlerError::new(format!("cannot start {what}: {e}")))?;
    let mut group = GroupGuard(child.id());
    let stdin = child.stdin.take();
    let body = task.body.clone();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input closes the pipe: not an error.
            let _ = stdin.write_all(&body).await;
        }
    };
    let ((), status) = tokio::join!(feed, child.wait());
    group.0 = None;
    status.map_err(|e| HandlerError::new(format!("waiting for {what} failed: {e}")))
}

/// Kills the child's whole process group if the handler is dropped before the child exited
/// (the handler timed out): `kill_on_drop` alone would kill only the shell, not what it started.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // The group id is the child's pid (`process_group(0)`).
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(|mut c| std::thread::spawn(move || c.wait()));
        }
    }
}

impl Handler for CommandHandler {
    async fn handle(&self, task: &Task) -> Result<(), HandlerError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args);
        let status = run_child(cmd, &self.program, task, Vec::new()).await?;
        if status.success() {
            Ok(())
        } else {
            Err(HandlerError::new(format!(
                "{} failed ({status})",
                self.program
            )))
        }
    }

    async fn on_dead_letter(&self, task: &Task, dead: &DeadLetter) {
        let Some(hook) = &self.on_dead_letter else {
            return;
        };
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(hook);
        let extra = vec![
            (
                "AMQP_LAST_ERROR".to_owned(),
                dead.last_error.replace('\0', ""),
            ),
            ("AMQP_ATTEMPTS".to_owned(), dead.attempts.to_string()),
            (
                "AMQP_FIRST_FAILURE_AT".to_owned(),
                dead.first_failure_at.to_string(),
            ),
            (
                "AMQP_LAST_FAILURE_AT".to_owned(),
                dead.last_failure_at.to_string(),
            ),
            ("AMQP_PARKING_QUEUE".to_owned(), dead.parking_queue.clone()),
        ];
        match run_child(cmd, "the --on-dead-letter command", task, extra).await {
            Ok(status) if status.success() => {}
            Ok(status) => tracing::error!(%status, "the --on-dead-letter command failed"),
            Err(e) => tracing::error!(error = %e, "the --on-dead-letter command did not run"),
        }
    }
}

/// `amqp-worker run`.
pub(crate) async fn run(args: RunArgs) -> Result<(), CliError> {
    let mut config = args.topology.config()?;
    if let Some(n) = args.concurrency {
        config.concurrency = n;
    }
    if let Some(n) = args.prefetch {
        config.prefetch = n;
    }
    if let Some(d) = args.handler_timeout {
        config.handler_timeout = d;
    }
    if let Some(d) = args.give_up_after {
        config.give_up_after = d;
    }
    if let Some(d) = args.shutdown_timeout {
        config.shutdown_timeout = d;
    }
    if args.connection_name.is_some() {
        config.connection_name = args.connection_name;
    }
    let mut command = args.command.into_iter();
    let program = command
        .next()
        .ok_or_else(|| CliError::Usage("no command given after --".to_owned()))?;
    let handler = CommandHandler {
        program,
        args: command.collect(),
        on_dead_letter: args.on_dead_letter,
    };
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
                    "second signal: exiting now; unfinished tasks are redelivered"
                );
                std::process::exit(130);
            }
        }
    });
    if let Some(addr) = args.metrics_addr {
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
