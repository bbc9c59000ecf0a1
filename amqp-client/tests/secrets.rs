//! No credential is ever printed: not in `Debug`/`Display` of the settings, not in errors, not
//! in the client's tracing output (captured at TRACE level while a connection with a wrong
//! password fails and one with the right password works).

use std::io::Write;
use std::sync::{Arc, Mutex};

use amqp_client::{Connection, ConnectionConfig};
use amqp_test_support::broker_url;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn passwords_never_appear_in_logs_errors_or_settings() {
    const WRONG: &str = "Zebra-Wrong-7731";
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let good = ConnectionConfig::from_uri(&broker_url()).unwrap();
    let mut bad = good.clone();
    bad.password = amqp_client::Secret::new(WRONG);
    let mut texts = vec![format!("{bad:?}"), format!("{bad}"), bad.to_uri_redacted()];
    rt.block_on(async {
        let err = Connection::connect_with(bad.clone()).await.unwrap_err();
        assert!(
            matches!(err, amqp_client::Error::AuthenticationFailed { .. }),
            "{err:?}"
        );
        texts.push(format!("{err} {err:?}"));
        let uri = format!("amqp://guest:{WRONG}@{}/%2f", good.address());
        let err = Connection::connect(&uri).await.unwrap_err();
        texts.push(format!("{err} {err:?}"));
        let bad_uri = format!("amqp://guest:{WRONG}@host:notaport/");
        let err = Connection::connect(&bad_uri).await.unwrap_err();
        texts.push(format!("{err} {err:?}"));
        texts.push(amqp_client::redact_uri(&bad_uri));
        let conn = Connection::connect_with(good.clone()).await.unwrap();
        conn.open_channel().await.unwrap();
        conn.close().await.unwrap();
    });
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        !logs.is_empty(),
        "the subscriber captured the client's events"
    );
    texts.push(logs);
    let good_password = good.password.expose().to_owned();
    for text in &texts {
        assert!(!text.contains(WRONG), "password leaked in: {text}");
        if good_password.len() >= 6 {
            assert!(!text.contains(&good_password), "password leaked in: {text}");
        }
    }
}
