//! Runs the seven RabbitMQ tutorial examples (`amqp-client/examples/`), and the
//! "coming from lapin" tour, as processes against the broker at `AMQP_URL` and checks that each
//! exits 0 and prints its summary line.
//!
//! `cargo run --example` per test would be slow and would contend for cargo's lock; instead
//! the first test to get here builds all eight once (`cargo build --example ...
//! --message-format=json`, which names each executable), and every test runs its binary
//! directly, with a time limit. Tests run in parallel; each example uses unique names.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EXAMPLES: [&str; 8] = [
    "hello_world",
    "work_queues",
    "publish_subscribe",
    "routing",
    "topics",
    "rpc",
    "publisher_confirms",
    "coming_from_lapin",
];

/// Bound on one example run.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The value of the JSON string field `"key":"..."` in `line` (no unescaping beyond `\\` and
/// `\"`, enough for cargo's paths).
fn json_str(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// Builds the examples once per test process; their paths by name.
fn examples() -> &'static HashMap<String, PathBuf> {
    static BUILT: OnceLock<Result<HashMap<String, PathBuf>, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "build",
            "--quiet",
            "-p",
            env!("CARGO_PKG_NAME"),
            "--message-format=json",
        ]);
        for name in EXAMPLES {
            cmd.args(["--example", name]);
        }
        // Same profile as this test binary (target/<profile>/deps/<this>).
        let profile = std::env::current_exe()
            .ok()
            .and_then(|exe| {
                Some(
                    exe.parent()?
                        .parent()?
                        .file_name()?
                        .to_string_lossy()
                        .into_owned(),
                )
            })
            .unwrap_or_default();
        if profile == "release" {
            cmd.arg("--release");
        }
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build of the examples failed: {}",
                out.status
            ));
        }
        let mut paths = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if !line.contains("\"reason\":\"compiler-artifact\"") {
                continue;
            }
            let Some(exe) = json_str(line, "executable") else {
                continue;
            };
            let exe = PathBuf::from(exe);
            if let Some(name) = exe.file_stem().map(|s| s.to_string_lossy().into_owned())
                && EXAMPLES.contains(&name.as_str())
            {
                paths.insert(name, exe);
            }
        }
        if paths.len() != EXAMPLES.len() {
            return Err(format!("cargo named only these examples: {paths:?}"));
        }
        Ok(paths)
    });
    match built {
        Ok(paths) => paths,
        Err(e) => panic!("{e}"),
    }
}

/// Runs `exe` with a time limit; its exit status and output.
fn run(exe: &Path) -> (std::process::ExitStatus, String, String) {
    let mut child = Command::new(exe)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not finish within {RUN_LIMIT:?}; output so far:\n{}",
                exe.display(),
                out.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Runs example `name` and asserts success and, for each of `expected`, a line starting
/// with it.
fn check(name: &str, expected: &[&str]) {
    let exe = &examples()[name];
    let (status, stdout, stderr) = run(exe);
    assert!(
        status.success(),
        "{name} exited with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for want in expected {
        assert!(
            stdout.lines().any(|l| l.starts_with(want)),
            "{name} did not print a line starting with {want:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
}

#[test]
fn hello_world() {
    check(
        "hello_world",
        &[
            " [x] Received 'Hello World!'",
            "hello_world: sent 1, received 1",
        ],
    );
}

#[test]
fn work_queues() {
    check("work_queues", &["work_queues: 10 tasks done by 2 workers"]);
}

#[test]
fn publish_subscribe() {
    check(
        "publish_subscribe",
        &["publish_subscribe: 2 subscribers received 5 messages each"],
    );
}

#[test]
fn routing() {
    check(
        "routing",
        &["routing: subscriber [error] got 2, subscriber [info warning error] got 5"],
    );
}

#[test]
fn topics() {
    check("topics", &["topics: Q1 got 3, Q2 got 5"]);
}

#[test]
fn rpc() {
    check("rpc", &["rpc: 11 calls answered, 11 served"]);
}

#[test]
fn publisher_confirms() {
    check(
        "publisher_confirms",
        &["publisher_confirms: all 3000 messages confirmed"],
    );
}

/// The tour of `amqp-client/docs/coming-from-lapin.md`: confirms (an unroutable mandatory
/// message comes back), basic.get, a nack with requeue redelivered, a reject, a 404 read as a
/// channel error, and nothing left in the queue.
#[test]
fn coming_from_lapin() {
    check(
        "coming_from_lapin",
        &[
            "m-x returned: 312",
            "got m-1 (2 more ready)",
            "consumed {\"m-2\", \"m-3\"}, m-2 after one requeue",
            "missing queue: Some(404), channel error true, recoverable false",
            "coming_from_lapin: 3 acked, 1 returned, got 1, consumed 2, requeued 1, rejected 1, \
             0 left, missing queue 404",
        ],
    );
}

#[test]
fn json_str_reads_cargo_fields() {
    let line =
        r#"{"reason":"compiler-artifact","executable":"/t/debug/examples/rpc","fresh":true}"#;
    assert_eq!(
        json_str(line, "executable").as_deref(),
        Some("/t/debug/examples/rpc")
    );
    assert_eq!(json_str(r#"{"executable":null}"#, "executable"), None);
    assert_eq!(
        json_str(r#"{"executable":"C:\\a\\b.exe"}"#, "executable").as_deref(),
        Some(r"C:\a\b.exe")
    );
}
