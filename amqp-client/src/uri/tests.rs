//! Tests of the `uri` module.
use std::time::Duration;

use super::*;
use crate::config::AuthMechanism;

/// The parsed URI, or a panic naming it.
fn ok(uri: &str) -> ConnectionConfig {
    ConnectionConfig::from_uri(uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
}

/// The error for a URI that must not parse.
fn err(uri: &str) -> UriError {
    match ConnectionConfig::from_uri(uri) {
        Ok(cfg) => panic!("{uri} parsed: {cfg:?}"),
        Err(e) => e,
    }
}

#[test]
fn spec_appendix_a_examples() {
    // The table of https://www.rabbitmq.com/docs/uri-spec; absent parts take our defaults.
    // Two rows differ from the spec on purpose (module docs): `amqp://:@/` and
    // `amqp://host/` have the empty vhost there, the default `/` here.
    let rows = [
        // uri | user | password | host | port | vhost
        "amqp://user:pass@host:10000/vhost | user | pass | host | 10000 | vhost",
        "amqp://user%61:%61pass@ho%61st:10000/v%2fhost | usera | apass | hoast | 10000 | v/host",
        "amqp:// | guest | guest | 127.0.0.1 | 5672 | /",
        "amqp://:@/ |  |  | 127.0.0.1 | 5672 | /",
        "amqp://user@ | user | guest | 127.0.0.1 | 5672 | /",
        "amqp://user:pass@ | user | pass | 127.0.0.1 | 5672 | /",
        "amqp://host | guest | guest | host | 5672 | /",
        "amqp://:10000 | guest | guest | 127.0.0.1 | 10000 | /",
        "amqp:///vhost | guest | guest | 127.0.0.1 | 5672 | vhost",
        "amqp://host/ | guest | guest | host | 5672 | /",
        "amqp://host/%2f | guest | guest | host | 5672 | /",
        "amqp://[::1] | guest | guest | ::1 | 5672 | /",
    ];
    for row in rows {
        let want: Vec<&str> = row.split(" | ").collect();
        let c = ok(want[0]);
        let port = c.port.to_string();
        let got = [
            want[0],
            &c.username,
            c.password.expose(),
            &c.host,
            &port,
            &c.vhost,
        ];
        assert_eq!(got[..], want[..]);
    }
}

#[test]
fn query_parameter_examples() {
    // Examples A, B and C of https://www.rabbitmq.com/docs/uri-query-parameters.
    let c = ok("amqp://myhost?heartbeat=5&connection_timeout=10000");
    assert_eq!((c.host.as_str(), c.heartbeat, c.tls), ("myhost", 5, None));
    assert_eq!(c.connection_timeout, Duration::from_secs(10));
    let base = "amqps://myhost?cacertfile=/path/to/ca_certificate.pem\
        &certfile=/path/to/client_certificate.pem&keyfile=/path/to/client_key.pem\
        &server_name_indication=myhost&verify=";
    let c = ok(&format!("{base}verify_peer"));
    let want = TlsOptions {
        ca_file: Some("/path/to/ca_certificate.pem".into()),
        cert_file: Some("/path/to/client_certificate.pem".into()),
        key_file: Some("/path/to/client_key.pem".into()),
        server_name: Some("myhost".into()),
        verify: true,
        rustls_config: None,
    };
    assert_eq!((c.port, c.tls), (5671, Some(want)));
    assert!(!ok(&format!("{base}verify_none")).tls.unwrap().verify);
}

#[test]
fn schemes_ports_hosts_and_other_parameters() {
    let c = ok("AMQPS://host");
    assert_eq!((c.port, c.tls), (5671, Some(TlsOptions::default())));
    assert_eq!(ok("amqps://host:5678").port, 5678);
    assert_eq!(ok("amqp://host:").port, 5672);
    let c = ok("amqp://u:p@[fe80::1:2]:5673/v");
    assert_eq!(
        (c.host.as_str(), c.address()),
        ("fe80::1:2", "[fe80::1:2]:5673".into())
    );
    assert_eq!(ok("amqp://10.0.0.7:1234").host, "10.0.0.7");
    assert_eq!(ok("  amqp://host/v\n").vhost, "v");
    assert_eq!(ok("amqp://h/v+x").vhost, "v+x");
    assert_eq!(ok("amqp://h/v%40x?connection_name=me@there").vhost, "v@x");
    let c = ok("amqp://h?frame_max=4096&channel_max=16&connection_name=a%20b&heartbeat=0&&");
    assert_eq!((c.frame_max, c.channel_max, c.heartbeat), (4096, 16, 0));
    assert_eq!(c.connection_name.as_deref(), Some("a b"));
    assert_eq!(
        ok("amqp://h?max_message_size=1024").limits.max_message_size,
        1024
    );
    assert!(ConnectionConfig::from_uri("amqp://h?max_message_size=big").is_err());
    assert!(ConnectionConfig::from_uri("amqp://h?frame_max=4095").is_err());
    let mechanisms = [
        "plain",
        "AMQPLAIN",
        "External",
        "amqp_auth_mechanisms:external",
    ];
    let want = [
        AuthMechanism::Plain,
        AuthMechanism::Amqplain,
        AuthMechanism::External,
    ];
    for (value, want) in mechanisms
        .into_iter()
        .zip(want.into_iter().chain([want[2]]))
    {
        assert_eq!(
            ok(&format!("amqp://h?auth_mechanism={value}")).auth_mechanism,
            want
        );
    }
}

#[test]
fn errors_name_what_is_wrong() {
    // uri => the start of the error's Debug form
    let cases = [
        r#"amqp://h?heartbeet=5 => UnknownParameter("heartbeet")"#,
        r#"amqp://h?cacertfile=/ca.pem => TlsParameterOnPlainUri("cacertfile")"#,
        r#"amqp://h?verify=verify_none => TlsParameterOnPlainUri("verify")"#,
        r#"amqp://h?heartbeat=abc => InvalidParameter { name: "heartbeat", value: "abc""#,
        r#"amqp://h?heartbeat=70000 => InvalidParameter { name: "heartbeat""#,
        r#"amqp://h?heartbeat => InvalidParameter { name: "heartbeat", value: """#,
        r#"amqp://h?frame_max=-1 => InvalidParameter { name: "frame_max", value: "-1""#,
        r#"amqp://h?channel_max=1e3 => InvalidParameter { name: "channel_max""#,
        r#"amqp://h?connection_timeout=0 => InvalidParameter { name: "connection_timeout""#,
        r#"amqp://h?auth_mechanism=crdemo => InvalidParameter { name: "auth_mechanism""#,
        r#"amqps://h?verify=yes => InvalidParameter { name: "verify""#,
        r#"amqps://h?cacertfile= => InvalidParameter { name: "cacertfile""#,
        r#"amqps://h?server_name_indication=disable => InvalidParameter"#,
        r#"amqp://h?connection_name= => InvalidParameter { name: "connection_name""#,
        r#"amqp://h?heartbeat=1&heartbeat=2 => DuplicateParameter("heartbeat")"#,
        r#"amqp://h:0 => InvalidPort("0")"#,
        r#"amqp://h:65536 => InvalidPort("65536")"#,
        r#"amqp://h:+5 => InvalidPort("+5")"#,
        r#"amqp://h:1:2 => InvalidPort("1:2")"#,
        r#"amqp://h/a/b => MultipleSegments("a/b")"#,
        r#"amqp://h/v@x => AtAfterHost"#,
        r#"amqp://[::1 => InvalidHost"#,
        r#"amqp://[zz]:5672 => InvalidHost"#,
        r#"amqp://[::1]x => InvalidHost"#,
        r#"http://h => UnsupportedScheme("http")"#,
        r#"localhost:5672 => MissingScheme"#,
        r#"amqp:/h => MissingScheme"#,
        r#"amqp://h#x => Fragment"#,
        r#"amqp://h/a%20b/c d => InvalidCharacter { offset: 16 }"#,
        r#"amqp://h/%zz => InvalidPercentEncoding { component: "vhost" }"#,
        r#"amqp://h/%4 => InvalidPercentEncoding"#,
        r#"amqp://h/%ff => InvalidUtf8 { component: "vhost" }"#,
        r#"amqp://h?%zz=1 => InvalidPercentEncoding"#,
        r#"amqp://h?connection_name=%ff => InvalidUtf8"#,
    ];
    for case in cases {
        let (uri, want) = case.split_once(" => ").unwrap();
        let e = format!("{:?}", err(uri));
        assert!(e.starts_with(want), "{uri}: {e}");
    }
    let text = err("amqp://h?heartbeat=abc").to_string();
    let want = "invalid value `abc` for URI parameter `heartbeat`: expected seconds";
    assert!(text.starts_with(want), "{text}");
    assert!(
        err("amqp://h?heartbeet=1")
            .to_string()
            .contains("`heartbeet`")
    );
}

#[test]
fn errors_never_show_the_password() {
    let bad = [
        "amqp://user:s3cr3t%zz@host",
        "amqp://user:s3cr3t%ff@host",
        "amqp://user:s3cr3t@host:abc",
        "amqp://user:s3cr3t@host?x=1",
        "amqp://user:s3cr3t@host#frag",
        "amqp://user:s3/cr3t@host",
        "amqp://user:s3cr3t/x@host/v",
        "amqp://user:s3?cr3t@host",
        "amqp://user:1?s3cr3t=1@host",
        "amqp://user:80/s3cr3t@host",
        "amqp://user:s3cr3t@[::1",
        "amqp://user:s3cr3t@host/a/b",
        "amqp://user:s3cr3t@host?heartbeat=x",
        "user:s3cr3t@host",
        "user:s3cr3t@host://",
        "amqp://user:s3 cr3t@host",
        "ftp://user:s3cr3t@host",
    ];
    for uri in bad {
        let e = err(uri);
        for shown in [e.to_string(), format!("{e:?}")] {
            let leaked = shown.contains("s3") || shown.contains("cr3t");
            assert!(!leaked, "{uri}: {shown}");
        }
    }
}

#[test]
fn redacted_uri_round_trips() {
    let c = ok(
        "amqps://app%40corp:p%40ss@mq.example:5000/a%2fb?heartbeat=10&frame_max=8192\
        &channel_max=9&connection_timeout=2500&auth_mechanism=external&connection_name=a%26b\
        &cacertfile=/etc/ca%20x.pem&certfile=c.pem&keyfile=k.pem&server_name_indication=mq\
        &verify=verify_none",
    );
    let redacted = c.to_uri_redacted();
    assert!(!redacted.contains("p%40ss"), "{redacted}");
    assert!(redacted.starts_with("amqps://app%40corp:***@mq.example:5000/a%2Fb?heartbeat=10"));
    assert_eq!(c.to_string(), redacted);
    assert!(!format!("{c:?}").contains("p@ss"));
    let mut back: ConnectionConfig = redacted.parse().unwrap();
    assert_eq!(back.password.expose(), "***");
    back.password = c.password.clone();
    assert_eq!(back, c);
    let plain = ConnectionConfig::default();
    assert_eq!(plain.to_string(), "amqp://guest:***@127.0.0.1:5672/%2F");
    let v6 = ConnectionConfig::builder()
        .host("::1")
        .tls(TlsOptions::default());
    assert_eq!(v6.build().to_string(), "amqps://guest:***@[::1]:5671/%2F");
}

#[test]
fn redact_uri_hides_passwords_even_in_bad_uris() {
    let cases = [
        "amqp://user:pass@host:5672/%2f => amqp://user:***@host:5672/%2f",
        "amqps://user:p@ss/w?rd@host/v?heartbeat=5 => amqps://user:***@host/v?heartbeat=5",
        "amqp://user@host => amqp://user@host",
        "amqp://host/v?heartbeat=5 => amqp://host/v?heartbeat=5",
        "amqp://:@/ => amqp://:***@/",
        "user:pass@host => user:***@host",
        "amqps://h?certfile=c&password=k3y&verify=x => amqps://h?certfile=c&password=***&verify=x",
        "amqp://u:p@h?connection_name=a@b => amqp://u:***@b",
        "garbage => garbage",
    ];
    for case in cases {
        let (uri, want) = case.split_once(" => ").unwrap();
        assert_eq!(redact_uri(uri), want, "{uri}");
    }
    assert_eq!(redact_uri(""), "");
}
