//! Cross-checks the method table (`methods/spec.rs`) against RabbitMQ's JSON spec in
//! `../shared/spec/amqp-rabbitmq-0.9.1.json`, when that file exists: every class and method id,
//! field name, field type (domains resolved), which methods carry content and which are
//! synchronous, in both directions (nothing missing, nothing extra). When the file is absent it
//! fails in CI (`CI=true`) and elsewhere skips, saying so (`amqp_test_skip::skip_or_fail`).
//! `AMQP_SPEC_JSON` points it at another copy.

use std::collections::HashMap;
use std::path::PathBuf;

use amqp_codec::methods::METHODS;
use serde_json::Value;

fn spec_path() -> PathBuf {
    match std::env::var_os("AMQP_SPEC_JSON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/spec/amqp-rabbitmq-0.9.1.json"),
    }
}

/// One method as the JSON spec describes it.
struct SpecMethod {
    name: String,
    /// (name, type) with domains resolved to their types.
    fields: Vec<(String, String)>,
    content: bool,
    synchronous: bool,
}

fn load_spec() -> Option<HashMap<(u16, u16), SpecMethod>> {
    let path = spec_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => {
            amqp_test_skip::skip_or_fail(&format!(
                "{}: {err}; the method table was not cross-checked against RabbitMQ's JSON \
                 spec (AMQP_SPEC_JSON names another copy)",
                path.display()
            ));
            return None;
        }
    };
    let json: Value = serde_json::from_str(&text).expect("the spec file is JSON");
    let domains: HashMap<&str, &str> = json["domains"]
        .as_array()
        .expect("domains")
        .iter()
        .map(|d| (d[0].as_str().expect("name"), d[1].as_str().expect("type")))
        .collect();
    let mut methods = HashMap::new();
    for class in json["classes"].as_array().expect("classes") {
        let class_name = class["name"].as_str().expect("class name");
        let class_id = class["id"].as_u64().expect("class id") as u16;
        for m in class["methods"].as_array().expect("methods") {
            let id = m["id"].as_u64().expect("method id") as u16;
            let fields = m["arguments"]
                .as_array()
                .expect("arguments")
                .iter()
                .map(|a| {
                    let ty = a["type"]
                        .as_str()
                        .or_else(|| a["domain"].as_str().and_then(|d| domains.get(d).copied()))
                        .expect("every argument has a type or a known domain");
                    (
                        a["name"].as_str().expect("arg name").to_owned(),
                        ty.to_owned(),
                    )
                })
                .collect();
            let method = SpecMethod {
                name: format!("{class_name}.{}", m["name"].as_str().expect("method name")),
                fields,
                content: m["content"].as_bool().unwrap_or(false),
                synchronous: m["synchronous"].as_bool().unwrap_or(false),
            };
            methods.insert((class_id, id), method);
        }
    }
    Some(methods)
}

#[test]
fn method_table_matches_rabbitmq_json_spec() {
    let Some(spec) = load_spec() else { return };
    assert_eq!(METHODS.len(), 66, "the table has every 0-9-1 method");
    assert_eq!(spec.len(), METHODS.len(), "as many methods as the spec");
    for info in METHODS {
        let key = (info.class_id.0, info.method_id);
        let m = spec
            .get(&key)
            .unwrap_or_else(|| panic!("{} ({key:?}) is not in the spec", info.name));
        assert_eq!(info.name, m.name, "name of {key:?}");
        assert_eq!(info.has_content, m.content, "content flag of {}", m.name);
        assert_eq!(
            info.synchronous, m.synchronous,
            "synchronous flag of {}",
            m.name
        );
        let ours: Vec<(String, String)> = info
            .fields
            .iter()
            .map(|f| (f.name.replace('_', "-"), f.spec_type.to_owned()))
            .collect();
        assert_eq!(ours, m.fields, "fields of {}", m.name);
    }
}

#[test]
fn every_synchronous_request_names_replies_that_exist() {
    for info in METHODS.iter().filter(|i| i.synchronous) {
        assert!(
            !info.responses.is_empty(),
            "{} names its replies",
            info.name
        );
        for (class, method) in info.responses {
            let reply = amqp_codec::methods::method_info(*class, *method)
                .unwrap_or_else(|| panic!("{} names a reply that is not in the table", info.name));
            assert!(!reply.synchronous, "{} is answered by a request", info.name);
        }
    }
}
