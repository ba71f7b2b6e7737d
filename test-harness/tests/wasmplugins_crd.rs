//! Every WasmPlugin in `wasmplugins/` passes the checks a cluster applies on `kubectl apply`:
//! Istio's WasmPlugin CRD schema, with unknown fields refused as strict field validation does.
//!
//! The CRD is read from `$ISTIO_WASMPLUGIN_CRD`, else `../shared/istio/wasmplugin-crd.yaml`
//! beside the repository; point the variable at your cluster's copy
//! (`kubectl get crd wasmplugins.extensions.istio.io -o yaml > crd.yaml`).
//!
//! A CRD's `openAPIV3Schema` is close to JSON Schema but not quite: Kubernetes drops (and strict
//! validation refuses) fields the schema does not declare, honours `nullable`, checks
//! `format: int32` ranges, and evaluates CEL rules (`x-kubernetes-validations`). The conversion
//! below does the same, translating the CEL rules Istio's CRD has into JSON Schema; a rule it
//! does not know is listed on stderr as not checked.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

fn repo_root() -> PathBuf {
    test_harness::envoy::repo_root()
}

fn crd_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ISTIO_WASMPLUGIN_CRD").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "$ISTIO_WASMPLUGIN_CRD is {} but no such file exists",
            path.display()
        );
        return path;
    }
    let beside = repo_root().join("../shared/istio/wasmplugin-crd.yaml");
    assert!(
        beside.is_file(),
        "Istio's WasmPlugin CRD was not found: set ISTIO_WASMPLUGIN_CRD to a copy of it \
         (kubectl get crd wasmplugins.extensions.istio.io -o yaml > wasmplugin-crd.yaml), \
         or place it at {}",
        beside.display()
    );
    beside
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let yaml = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The CRD's schema for `apiVersion` (`group/version`), as JSON Schema, plus the CEL rules the
/// conversion could not translate.
struct CrdSchema {
    validator: jsonschema::Validator,
    unchecked_rules: Vec<String>,
}

fn crd_schema(api_version: &str, kind: &str) -> CrdSchema {
    let path = crd_path();
    let crd = yaml_documents(&path)
        .into_iter()
        .find(|doc| doc["kind"] == "CustomResourceDefinition")
        .unwrap_or_else(|| panic!("{} holds no CustomResourceDefinition", path.display()));
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or_else(|| panic!("apiVersion {api_version:?} has no group"));
    assert_eq!(
        crd["spec"]["group"],
        group,
        "the CRD in {} is for another group",
        path.display()
    );
    assert_eq!(
        crd["spec"]["names"]["kind"],
        kind,
        "the CRD in {} is for another kind",
        path.display()
    );
    let versions = crd["spec"]["versions"]
        .as_array()
        .expect("CRD spec.versions");
    let served = versions
        .iter()
        .find(|v| v["name"] == version && v["served"] == true)
        .unwrap_or_else(|| {
            panic!(
                "the CRD in {} serves no version {version:?}",
                path.display()
            )
        });

    let mut unchecked_rules = Vec::new();
    let mut schema = to_json_schema(&served["schema"]["openAPIV3Schema"], &mut unchecked_rules);
    // The API server validates these itself, beside the CRD's schema.
    let dns_subdomain = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    let dns_label = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
    schema["properties"]["apiVersion"] = json!({"const": api_version});
    schema["properties"]["kind"] = json!({"const": kind});
    schema["properties"]["metadata"] = json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 253, "pattern": dns_subdomain},
            "namespace": {"type": "string", "maxLength": 63, "pattern": dns_label},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
        }
    });
    schema["required"] = json!(["apiVersion", "kind", "metadata", "spec"]);
    let validator = jsonschema::draft7::new(&schema)
        .unwrap_or_else(|e| panic!("converted CRD schema is invalid: {e}"));
    CrdSchema {
        validator,
        unchecked_rules,
    }
}

/// One node of a structural schema to JSON Schema (draft 7).
fn to_json_schema(node: &Value, unchecked_rules: &mut Vec<String>) -> Value {
    let Value::Object(map) = node else {
        return node.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let converted = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, child)| (name.clone(), to_json_schema(child, unchecked_rules)))
                    .collect(),
            ),
            "items" | "additionalProperties" | "not" => to_json_schema(value, unchecked_rules),
            "anyOf" | "allOf" | "oneOf" => Value::Array(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| to_json_schema(s, unchecked_rules))
                    .collect(),
            ),
            // Documentation, OpenAPI-only and Kubernetes-only keywords are handled below or dropped.
            "description" | "nullable" | "format" => continue,
            other if other.starts_with("x-kubernetes-") => continue,
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }

    if map.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::String(ty)) = out.get("type").cloned()
    {
        out.insert("type".into(), json!([ty, "null"]));
    }
    if map.get("format").and_then(Value::as_str) == Some("int32") {
        out.entry("minimum").or_insert(json!(i32::MIN));
        out.entry("maximum").or_insert(json!(i32::MAX));
    }
    let preserves_unknown =
        map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let is_object = map.get("type").and_then(Value::as_str) == Some("object");
    if is_object && !preserves_unknown && !out.contains_key("additionalProperties") {
        // Kubernetes prunes undeclared fields; `kubectl apply` (strict field validation) refuses them.
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    let mut rules = Vec::new();
    for rule in map
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = rule["rule"].as_str().unwrap_or_default();
        match cel_rule_as_json_schema(text) {
            Some(schema) => rules.push(schema),
            None => unchecked_rules.push(text.to_string()),
        }
    }
    if !rules.is_empty() {
        out.insert("allOf".into(), Value::Array(rules));
    }
    Value::Object(out)
}

/// The CEL rules of Istio's WasmPlugin CRD, each as the JSON Schema it amounts to.
fn cel_rule_as_json_schema(rule: &str) -> Option<Value> {
    let rule: String = rule.split_whitespace().collect::<Vec<_>>().join(" ");
    let schema = match rule.as_str() {
        r#"!self.contains("*")"# => json!({"pattern": r"^[^*]*$"}),
        r#"self.all(key, !key.contains("*"))"# => json!({"propertyNames": {"pattern": r"^[^*]*$"}}),
        "self.all(key, key.size() != 0)" => json!({"propertyNames": {"minLength": 1}}),
        "self.size() == 0" => json!({"maxLength": 0}),
        r#"(has(self.valueFrom) ? self.valueFrom : "") != "HOST" || !has(self.value)"# => json!({
            "if": {"required": ["valueFrom"], "properties": {"valueFrom": {"const": "HOST"}}},
            "then": {"not": {"required": ["value"]}}
        }),
        "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1" =>
        {
            json!({
                "not": {"anyOf": [
                    {"required": ["selector", "targetRef"]},
                    {"required": ["selector", "targetRefs"]},
                    {"required": ["targetRef", "targetRefs"]}
                ]}
            })
        }
        // The url rule: a scheme, if any, is http, https, oci or file (no scheme means oci).
        r if r.starts_with("isURL(self) ?")
            && r.contains(r#"["", "http", "https", "oci", "file"]"#) =>
        {
            json!({
                "anyOf": [{"pattern": r"^(https?|oci|file)://"}, {"not": {"pattern": r"^[A-Za-z][A-Za-z0-9+.-]*://"}}]
            })
        }
        _ => return None,
    };
    Some(schema)
}

fn violations(document: &Value) -> Vec<String> {
    let api_version = document["apiVersion"]
        .as_str()
        .unwrap_or("extensions.istio.io/v1alpha1");
    let schema = crd_schema(api_version, "WasmPlugin");
    for rule in &schema.unchecked_rules {
        eprintln!("note: CEL rule not checked offline: {rule}");
    }
    schema
        .validator
        .iter_errors(document)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn repo_wasmplugins() -> Vec<(PathBuf, Value)> {
    let dir = repo_root().join("wasmplugins");
    let files = test_harness::envoy::wasmplugin_files(&dir).unwrap_or_else(|e| panic!("{e}"));
    files
        .into_iter()
        .flat_map(|file| {
            yaml_documents(&file)
                .into_iter()
                .map(move |doc| (file.clone(), doc))
        })
        .filter(|(_, doc)| doc["kind"] == "WasmPlugin")
        .collect()
}

#[test]
fn every_wasmplugin_conforms_to_the_istio_crd() {
    let plugins = repo_wasmplugins();
    assert!(!plugins.is_empty(), "no WasmPlugin found in wasmplugins/");
    for (file, plugin) in &plugins {
        let found = violations(plugin);
        assert!(
            found.is_empty(),
            "{} is not a valid WasmPlugin:\n{}",
            file.display(),
            found.join("\n")
        );
    }
}

/// A minimal valid WasmPlugin the negative tests break one way each.
fn valid_plugin() -> Value {
    let plugin = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "banking-headers", "namespace": "istio-system"},
        "spec": {
            "url": "oci://registry.example/banking-headers:0.1.0",
            "phase": "AUTHN",
            "priority": 100,
            "failStrategy": "FAIL_CLOSE",
            "selector": {"matchLabels": {"istio": "ingressgateway"}},
            "pluginConfig": {"anything": {"goes": [1, 2.5, "here"]}}
        }
    });
    assert_eq!(
        violations(&plugin),
        Vec::<String>::new(),
        "the base plugin must be valid for the negatives to mean anything"
    );
    plugin
}

fn assert_rejected(mutate: impl FnOnce(&mut Value), mentions: &str) {
    let mut plugin = valid_plugin();
    mutate(&mut plugin);
    let found = violations(&plugin);
    assert!(
        !found.is_empty(),
        "the CRD accepted an invalid plugin: {plugin}"
    );
    assert!(
        found.iter().any(|v| v.contains(mentions)),
        "expected a violation mentioning {mentions:?}, got {found:#?}"
    );
}

#[test]
fn crd_rejects_an_unknown_phase() {
    assert_rejected(
        |p| p["spec"]["phase"] = json!("AUTHENTICATION"),
        "/spec/phase",
    );
}

#[test]
fn crd_rejects_a_misspelled_fail_strategy() {
    assert_rejected(
        |p| p["spec"]["failStrategy"] = json!("FAIL_CLOSED"),
        "/spec/failStrategy",
    );
}

#[test]
fn crd_rejects_an_undeclared_spec_field() {
    assert_rejected(
        |p| p["spec"]["failstrategy"] = json!("FAIL_CLOSE"),
        "failstrategy",
    );
}

#[test]
fn crd_rejects_a_priority_beyond_int32() {
    assert_rejected(
        |p| p["spec"]["priority"] = json!(1_u64 << 31),
        "/spec/priority",
    );
}

#[test]
fn crd_rejects_a_plugin_without_url() {
    assert_rejected(
        |p| _ = p["spec"].as_object_mut().unwrap().remove("url"),
        "url",
    );
}

#[test]
fn crd_rejects_selector_together_with_target_refs() {
    assert_rejected(
        |p| p["spec"]["targetRefs"] = json!([{"kind": "Gateway", "name": "ingress"}]),
        "targetRefs",
    );
}

#[test]
fn crd_rejects_a_url_with_an_unsupported_scheme() {
    assert_rejected(
        |p| p["spec"]["url"] = json!("ftp://example/banking_headers.wasm"),
        "/spec/url",
    );
}

#[test]
fn crd_accepts_a_null_priority_as_kubernetes_does() {
    let mut plugin = valid_plugin();
    plugin["spec"]["priority"] = Value::Null;
    assert_eq!(violations(&plugin), Vec::<String>::new());
}
