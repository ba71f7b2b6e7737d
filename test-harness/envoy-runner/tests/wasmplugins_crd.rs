//! Every WasmPlugin in `wasmplugins/` passes the checks a cluster applies on `kubectl apply`:
//! Istio's WasmPlugin schema, with unknown fields refused as strict field validation does.
//!
//! Where the schema comes from, first found wins (the test prints which it used):
//! 1. `$ISTIO_WASMPLUGIN_CRD`: a YAML file holding the WasmPlugin CRD (alone or among others),
//!    e.g. your cluster's (`kubectl get crd wasmplugins.extensions.istio.io -o yaml`);
//! 2. `../shared/istio/crd-all.gen.yaml` beside the repository (Istio 1.30.3's CRDs);
//! 3. npm's `@kubernetes-models/istio` 3.0.1 (Istio 1.29.2), which `make tools` installs into
//!    `.tools/node_modules`. It ships no JSON or OpenAPI schema, only validators compiled to
//!    JavaScript and TypeScript declarations; the structural schema is read from the
//!    declarations (`<group>/<version>/<Kind>.d.ts`: fields, types, enums, required fields).
//!    What Istio's CRD says that declarations cannot express (`nullable`, `format: int32`, CEL
//!    rules) is added back from [`CRD_ONLY`], and every entry there is checked against the CRD
//!    whenever a CRD file is the source, so it cannot drift unnoticed.
//!
//! With none of them the tests fail, saying how to get one.
//!
//! A CRD's `openAPIV3Schema` is close to JSON Schema but not quite: Kubernetes drops (and strict
//! validation refuses) fields the schema does not declare, honours `nullable`, checks
//! `format: int32` ranges, and evaluates CEL rules (`x-kubernetes-validations`). The conversion
//! below does the same, translating the CEL rules Istio's CRD has into JSON Schema; a rule it
//! does not know is listed on stderr as not checked.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

fn repo_root() -> PathBuf {
    envoy_runner::repo_root()
}

/// The npm package `make tools` installs, and where.
const NPM_PACKAGE: &str = "@kubernetes-models/istio";
const NPM_VERSION: &str = "3.0.1";

/// Where the schemas are read from.
#[derive(Debug)]
enum SchemaSource {
    /// A YAML file with CustomResourceDefinitions.
    CrdFile {
        path: PathBuf,
        chosen_by: &'static str,
    },
    /// The npm package's directory.
    NpmPackage { dir: PathBuf },
}

impl std::fmt::Display for SchemaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaSource::CrdFile { path, chosen_by } => {
                write!(f, "CRD file {} ({chosen_by})", path.display())
            }
            SchemaSource::NpmPackage { dir } => write!(
                f,
                "npm {NPM_PACKAGE}@{NPM_VERSION} type declarations in {} (make tools)",
                dir.display()
            ),
        }
    }
}

/// The schema source, found once per test run and printed once (to the terminal, past the
/// test harness's output capture).
fn schema_source() -> &'static SchemaSource {
    static SOURCE: OnceLock<SchemaSource> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let source = find_schema_source();
        let _ = writeln!(std::io::stderr(), "WasmPlugin schema source: {source}");
        source
    })
}

fn find_schema_source() -> SchemaSource {
    if let Some(path) = std::env::var_os("ISTIO_WASMPLUGIN_CRD").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "$ISTIO_WASMPLUGIN_CRD is {} but no such file exists",
            path.display()
        );
        return SchemaSource::CrdFile {
            path,
            chosen_by: "$ISTIO_WASMPLUGIN_CRD",
        };
    }
    let shared = repo_root().join("../shared/istio/crd-all.gen.yaml");
    if shared.is_file() {
        return SchemaSource::CrdFile {
            path: shared,
            chosen_by: "../shared beside the repository",
        };
    }
    let dir = repo_root().join(".tools/node_modules").join(NPM_PACKAGE);
    let manifest = dir.join("package.json");
    let installed = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|package| package["version"].as_str().map(str::to_string));
    match installed {
        Some(version) if version == NPM_VERSION => SchemaSource::NpmPackage { dir },
        Some(version) => panic!(
            "{} is {NPM_PACKAGE} {version}, not {NPM_VERSION}: run `make tools`",
            dir.display()
        ),
        None => panic!(
            "no Istio schema found: run `make tools` (installs npm {NPM_PACKAGE}@{NPM_VERSION} \
             into .tools/), or set ISTIO_WASMPLUGIN_CRD to a CRD file (kubectl get crd \
             wasmplugins.extensions.istio.io -o yaml > crd.yaml), or place Istio's CRDs at {}",
            shared.display()
        ),
    }
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

/// What Istio's WasmPlugin CRD declares that TypeScript declarations cannot say: where (a
/// path of property names from the resource's root) and what, in the CRD's own words.
const CRD_ONLY: &[(&[&str], CrdOnly)] = &[
    (&["spec", "priority"], CrdOnly::NullableInt32),
    (
        &["spec"],
        CrdOnly::Rule(
            "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + \
             (has(self.targetRefs) ? 1 : 0) <= 1",
        ),
    ),
    (
        &["spec", "url"],
        CrdOnly::Rule(
            r#"isURL(self) ? (url(self).getScheme() in ["", "http", "https", "oci", "file"]) : (isURL("http://" + self) && url("http://" + self).getScheme() in ["", "http", "https", "oci", "file"])"#,
        ),
    ),
];

#[derive(Debug, Clone, Copy)]
enum CrdOnly {
    /// `format: int32` and `nullable: true` on an integer.
    NullableInt32,
    /// One `x-kubernetes-validations` rule.
    Rule(&'static str),
}

fn normalized(rule: &str) -> String {
    rule.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The node at `path` (property names) of a structural schema.
fn schema_at<'a>(schema: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(schema, |node, name| {
        node.get_mut("properties")?.get_mut(*name)
    })
}

/// The structural (`openAPIV3Schema`) schema of `kind` at `api_version`, from the source.
fn structural_schema(api_version: &str, kind: &str) -> Value {
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or_else(|| panic!("apiVersion {api_version:?} has no group"));
    match schema_source() {
        SchemaSource::CrdFile { path, .. } => {
            let crd = yaml_documents(path)
                .into_iter()
                .find(|doc| {
                    doc["kind"] == "CustomResourceDefinition"
                        && doc["spec"]["group"] == group
                        && doc["spec"]["names"]["kind"] == kind
                })
                .unwrap_or_else(|| panic!("{} holds no CRD for {group} {kind}", path.display()));
            let served = crd["spec"]["versions"]
                .as_array()
                .expect("CRD spec.versions")
                .iter()
                .find(|v| v["name"] == version && v["served"] == true)
                .unwrap_or_else(|| {
                    panic!(
                        "the CRD in {} serves no version {version:?}",
                        path.display()
                    )
                });
            let mut schema = served["schema"]["openAPIV3Schema"].clone();
            for (at, what) in crd_only(kind) {
                let node = schema_at(&mut schema, at)
                    .unwrap_or_else(|| panic!("the CRD has no {}", at.join(".")));
                let present = match what {
                    CrdOnly::NullableInt32 => node["format"] == "int32" && node["nullable"] == true,
                    CrdOnly::Rule(rule) => node["x-kubernetes-validations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|r| {
                            normalized(r["rule"].as_str().unwrap_or_default()) == normalized(rule)
                        }),
                };
                assert!(
                    present,
                    "CRD_ONLY says {} has {what:?}, but the CRD in {} does not: update CRD_ONLY",
                    at.join("."),
                    path.display()
                );
            }
            schema
        }
        SchemaSource::NpmPackage { dir } => {
            let file = dir.join(group).join(version).join(format!("{kind}.d.ts"));
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let mut schema = typescript::interface_schema(&text, &format!("I{kind}"))
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for (at, what) in crd_only(kind) {
                let node = schema_at(&mut schema, at)
                    .unwrap_or_else(|| panic!("{} declares no {}", file.display(), at.join(".")));
                match what {
                    CrdOnly::NullableInt32 => {
                        node["type"] = json!("integer");
                        node["format"] = json!("int32");
                        node["nullable"] = json!(true);
                    }
                    CrdOnly::Rule(rule) => {
                        let rules = node
                            .as_object_mut()
                            .expect("an object schema")
                            .entry("x-kubernetes-validations")
                            .or_insert(json!([]));
                        rules
                            .as_array_mut()
                            .expect("a list of rules")
                            .push(json!({"rule": rule}));
                    }
                }
            }
            schema
        }
    }
}

/// [`CRD_ONLY`] is about the WasmPlugin CRD.
fn crd_only(kind: &str) -> &'static [(&'static [&'static str], CrdOnly)] {
    if kind == "WasmPlugin" { CRD_ONLY } else { &[] }
}

fn crd_schema(api_version: &str, kind: &str) -> CrdSchema {
    let mut unchecked_rules = Vec::new();
    let mut schema = to_json_schema(&structural_schema(api_version, kind), &mut unchecked_rules);
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
        .unwrap_or_else(|e| panic!("converted schema is invalid: {e}"));
    CrdSchema {
        validator,
        unchecked_rules,
    }
}

/// Reads the structural schema out of the TypeScript declarations `@kubernetes-models`
/// generates from a CRD: `export interface IKind { "field"?: type; ... }` where a type is a
/// union of string literals (an enum), `string`, `number`, `boolean`, `Array<T>`, an object
/// type (`{}` alone: any fields, as `x-kubernetes-preserve-unknown-fields`), an index
/// signature (`{ [key: string]: T }`: a map), or another declared name (left unconstrained).
mod typescript {
    use serde_json::{Map, Value, json};

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Str(String),
        Ident(String),
        Punct(char),
    }

    fn tokens(text: &str) -> Result<Vec<Token>, String> {
        let mut out = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                c if c.is_whitespace() => {}
                '/' if chars.peek() == Some(&'*') => {
                    let mut last = ' ';
                    for next in chars.by_ref() {
                        if last == '*' && next == '/' {
                            break;
                        }
                        last = next;
                    }
                }
                '/' if chars.peek() == Some(&'/') => {
                    for next in chars.by_ref() {
                        if next == '\n' {
                            break;
                        }
                    }
                }
                '"' | '\'' => {
                    let mut literal = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => literal.extend(chars.next()),
                            Some(end) if end == c => break,
                            Some(other) => literal.push(other),
                            None => return Err("unterminated string".into()),
                        }
                    }
                    out.push(Token::Str(literal));
                }
                c if c.is_alphanumeric() || c == '_' || c == '$' => {
                    let mut ident = c.to_string();
                    while let Some(&next) = chars.peek() {
                        if next.is_alphanumeric() || next == '_' || next == '$' || next == '.' {
                            ident.push(next);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    out.push(Token::Ident(ident));
                }
                other => out.push(Token::Punct(other)),
            }
        }
        Ok(out)
    }

    struct Parser {
        tokens: Vec<Token>,
        at: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<&Token> {
            self.tokens.get(self.at)
        }

        fn next(&mut self) -> Result<Token, String> {
            let token = self
                .peek()
                .cloned()
                .ok_or("unexpected end of declarations")?;
            self.at += 1;
            Ok(token)
        }

        fn eat(&mut self, punct: char) -> bool {
            if self.peek() == Some(&Token::Punct(punct)) {
                self.at += 1;
                true
            } else {
                false
            }
        }

        fn expect(&mut self, punct: char) -> Result<(), String> {
            if self.eat(punct) {
                Ok(())
            } else {
                Err(format!(
                    "expected {punct:?} at token {}, found {:?}",
                    self.at,
                    self.peek()
                ))
            }
        }

        fn union(&mut self) -> Result<Value, String> {
            let mut members = vec![self.primary()?];
            while self.eat('|') {
                members.push(self.primary()?);
            }
            if members.len() == 1 {
                return Ok(members.remove(0));
            }
            let literals: Option<Vec<Value>> =
                members.iter().map(|m| m.get("const").cloned()).collect();
            if let Some(literals) = literals {
                return Ok(json!({"type": "string", "enum": literals}));
            }
            let types: Vec<&str> = members.iter().filter_map(|m| m["type"].as_str()).collect();
            if types.len() == 2 && types.contains(&"number") && types.contains(&"string") {
                return Ok(json!({"x-kubernetes-int-or-string": true}));
            }
            Ok(json!({"anyOf": members}))
        }

        fn primary(&mut self) -> Result<Value, String> {
            match self.next()? {
                Token::Str(literal) => Ok(json!({"type": "string", "const": literal})),
                Token::Punct('{') => self.object(),
                Token::Punct('(') => {
                    let inner = self.union()?;
                    self.expect(')')?;
                    Ok(inner)
                }
                Token::Ident(name) => match name.as_str() {
                    "string" => Ok(json!({"type": "string"})),
                    "number" => Ok(json!({"type": "number"})),
                    "boolean" => Ok(json!({"type": "boolean"})),
                    "Array" => {
                        self.expect('<')?;
                        let items = self.union()?;
                        self.expect('>')?;
                        Ok(json!({"type": "array", "items": items}))
                    }
                    // Another declared type (e.g. IObjectMeta): not described here.
                    _ => Ok(json!({})),
                },
                other => Err(format!("unexpected {other:?} in a type")),
            }
        }

        /// After `{`.
        fn object(&mut self) -> Result<Value, String> {
            let mut properties = Map::new();
            let mut required = Vec::new();
            let mut map_values = None;
            while !self.eat('}') {
                if self.eat('[') {
                    // An index signature: `[key: string]: T`.
                    self.next()?;
                    self.expect(':')?;
                    self.next()?;
                    self.expect(']')?;
                    self.expect(':')?;
                    map_values = Some(self.union()?);
                } else {
                    let name = match self.next()? {
                        Token::Str(name) | Token::Ident(name) => name,
                        other => return Err(format!("expected a field name, found {other:?}")),
                    };
                    let optional = self.eat('?');
                    self.expect(':')?;
                    let schema = self.union()?;
                    if !optional {
                        required.push(json!(name));
                    }
                    properties.insert(name, schema);
                }
                let _ = self.eat(';') || self.eat(',');
            }
            Ok(match map_values {
                Some(values) => json!({"type": "object", "additionalProperties": values}),
                None if properties.is_empty() => {
                    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
                }
                None => {
                    let mut schema = json!({"type": "object", "properties": properties});
                    if !required.is_empty() {
                        schema["required"] = Value::Array(required);
                    }
                    schema
                }
            })
        }
    }

    /// The structural schema of `export interface <name> { ... }` in `text`.
    pub fn interface_schema(text: &str, name: &str) -> Result<Value, String> {
        let tokens = tokens(text)?;
        let start = tokens
            .windows(3)
            .position(|w| {
                w[0] == Token::Ident("interface".into())
                    && w[1] == Token::Ident(name.into())
                    && w[2] == Token::Punct('{')
            })
            .ok_or_else(|| format!("no `interface {name}`"))?;
        let mut parser = Parser {
            tokens,
            at: start + 3,
        };
        parser.object()
    }

    #[test]
    fn reads_enums_required_fields_arrays_maps_and_free_form_objects() {
        let text = r#"
            import { IObjectMeta } from "x";
            export interface IThing {
                /** The mode. */
                "spec": {
                    "mode"?: "A" | "B";
                    "ports"?: Array<{
                        "number": number;
                    }>;
                    "labels"?: {
                        [key: string]: string;
                    };
                    "config"?: {};
                    "generation"?: number | string;
                    "url": string;
                };
                "metadata"?: IObjectMeta;
            }
            export declare class Thing {}
        "#;
        let schema = interface_schema(text, "IThing").unwrap();
        let spec = &schema["properties"]["spec"];
        assert_eq!(schema["required"], json!(["spec"]));
        assert_eq!(spec["required"], json!(["url"]));
        assert_eq!(
            spec["properties"]["mode"],
            json!({"type": "string", "enum": ["A", "B"]})
        );
        assert_eq!(
            spec["properties"]["ports"]["items"]["properties"]["number"],
            json!({"type": "number"})
        );
        assert_eq!(
            spec["properties"]["ports"]["items"]["required"],
            json!(["number"])
        );
        assert_eq!(
            spec["properties"]["labels"]["additionalProperties"],
            json!({"type": "string"})
        );
        assert_eq!(
            spec["properties"]["config"]["x-kubernetes-preserve-unknown-fields"],
            json!(true)
        );
        assert_eq!(
            spec["properties"]["generation"],
            json!({"x-kubernetes-int-or-string": true})
        );
        assert_eq!(schema["properties"]["metadata"], json!({}));
        assert!(interface_schema(text, "IOther").is_err());
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
    let files = envoy_runner::wasmplugin_files(&dir).unwrap_or_else(|e| panic!("{e}"));
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

// ---- deploy/: the idempotency filter's Redis store ----------------------------------------

const REDIS_DEPLOY: &str = "deploy/idempotency-redis";

fn deploy_documents() -> Vec<(PathBuf, Value)> {
    let dir = repo_root().join(REDIS_DEPLOY);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|file| {
            yaml_documents(&file)
                .into_iter()
                .map(move |doc| (file.clone(), doc))
        })
        .collect()
}

/// With npm's package as the source, kinds other than WasmPlugin are checked by the package's
/// own validator (its TypeScript declarations use intersections the reader above does not
/// take): enums, types and required fields, though not unknown fields.
fn npm_violations(dir: &Path, api_version: &str, kind: &str, document: &Value) -> Vec<String> {
    let (group, version) = api_version.split_once('/').expect("group/version");
    let module = dir.join(group).join(version).join(format!("{kind}.js"));
    let script = "import fs from 'node:fs';\
        const mod = await import('file://' + process.env.MODEL_MODULE);\
        const doc = JSON.parse(fs.readFileSync(0, 'utf8'));\
        try { new mod[process.env.MODEL_KIND](doc).validate(); }\
        catch (e) { console.log(String(e.message || e)); process.exit(1); }";
    let mut child = std::process::Command::new("node")
        .args(["--input-type=module", "-e", script])
        .env("MODEL_MODULE", &module)
        .env("MODEL_KIND", kind)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("node (for {}): {e}", module.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(document.to_string().as_bytes())
        .expect("write to node");
    let output = child.wait_with_output().expect("node ran");
    if output.status.success() {
        Vec::new()
    } else {
        vec![String::from_utf8_lossy(&output.stdout).trim().to_string()]
    }
}

#[test]
fn every_istio_resource_beside_the_redis_store_conforms_to_its_crd() {
    let mut checked = Vec::new();
    for (file, document) in deploy_documents() {
        let api_version = document["apiVersion"].as_str().unwrap_or_default();
        if !api_version
            .split('/')
            .next()
            .unwrap_or_default()
            .ends_with("istio.io")
        {
            continue;
        }
        let kind = document["kind"].as_str().expect("a kind");
        let found = match schema_source() {
            SchemaSource::NpmPackage { dir } if kind != "WasmPlugin" => {
                npm_violations(dir, api_version, kind, &document)
            }
            _ => {
                let schema = crd_schema(api_version, kind);
                schema
                    .validator
                    .iter_errors(&document)
                    .map(|e| format!("{}: {e}", e.instance_path()))
                    .collect()
            }
        };
        assert!(
            found.is_empty(),
            "{}: {kind} {} is not valid:\n{}",
            file.display(),
            document["metadata"]["name"],
            found.join("\n")
        );
        checked.push(kind.to_string());
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "AuthorizationPolicy",
            "AuthorizationPolicy",
            "DestinationRule",
            "PeerAuthentication",
            "PeerAuthentication",
            "WasmPlugin"
        ]
    );
}

#[test]
fn the_redis_wasmplugin_is_the_shipped_one_with_only_its_store_changed() {
    let shipped = &repo_wasmplugins()
        .into_iter()
        .find(|(_, doc)| doc["metadata"]["name"] == "idempotency")
        .expect("wasmplugins/idempotency.yaml")
        .1;
    let redis = deploy_documents()
        .into_iter()
        .find(|(_, doc)| doc["kind"] == "WasmPlugin")
        .expect("a WasmPlugin in deploy/idempotency-redis")
        .1;
    assert_eq!(
        redis["spec"]["pluginConfig"]["store"]["redis"]["cluster"],
        "outbound|7379||webdis.payments.svc.cluster.local"
    );
    let without_store = |doc: &Value| {
        let mut doc = doc.clone();
        doc["spec"]["pluginConfig"]["store"] = Value::Null;
        doc
    };
    assert_eq!(without_store(&redis), without_store(shipped));
}

/// What `kubectl apply` would refuse or what would not work once applied, for the kinds that
/// have no CRD: known kinds and versions, DNS names, selectors that select the pod template,
/// mounts of declared volumes, ConfigMaps and Secrets that exist or are documented, Service
/// port names that tell Istio the protocol, and the ConfigMap holding the shipped files.
#[test]
fn the_redis_stores_kubernetes_objects_are_well_formed_and_hold_the_shipped_files() {
    let documents: Vec<Value> = deploy_documents()
        .into_iter()
        .filter(|(file, _)| file.ends_with("kubernetes.yaml"))
        .map(|(_, doc)| doc)
        .collect();
    let dns_label = |name: &str| {
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let of_kind =
        |kind: &str| -> Vec<&Value> { documents.iter().filter(|d| d["kind"] == kind).collect() };
    for doc in &documents {
        let kind = doc["kind"].as_str().expect("a kind");
        let expected_api = match kind {
            "ConfigMap" | "ServiceAccount" | "Service" => "v1",
            "StatefulSet" | "Deployment" => "apps/v1",
            "NetworkPolicy" => "networking.k8s.io/v1",
            _ if doc["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .contains("istio.io") =>
            {
                continue;
            }
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(doc["apiVersion"], expected_api, "{kind}");
        let name = doc["metadata"]["name"].as_str().expect("metadata.name");
        assert!(dns_label(name), "{kind} {name}");
        assert_eq!(doc["metadata"]["namespace"], "payments", "{kind} {name}");
    }
    let config_maps: Vec<&str> = of_kind("ConfigMap")
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    let accounts: Vec<&str> = of_kind("ServiceAccount")
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    let mut workload_labels = Vec::new();
    for workload in of_kind("StatefulSet")
        .into_iter()
        .chain(of_kind("Deployment"))
    {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let spec = &workload["spec"];
        let labels = &spec["template"]["metadata"]["labels"];
        let selector = spec["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        for (k, v) in selector {
            assert_eq!(&labels[k], v, "{name}: the selector selects its own pods");
        }
        workload_labels.push(labels.clone());
        let pod = &spec["template"]["spec"];
        let account = pod["serviceAccountName"]
            .as_str()
            .expect("serviceAccountName");
        assert!(accounts.contains(&account), "{name}: account {account}");
        let mut volumes: Vec<&str> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                if let Some(map) = v["configMap"]["name"].as_str() {
                    assert!(config_maps.contains(&map), "{name}: ConfigMap {map}");
                }
                v["name"].as_str().expect("a volume name")
            })
            .collect();
        for claim in spec["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            volumes.push(claim["metadata"]["name"].as_str().unwrap());
        }
        let containers = pod["containers"]
            .as_array()
            .into_iter()
            .chain(pod["initContainers"].as_array())
            .flatten();
        for container in containers {
            let c = container["name"].as_str().expect("a container name");
            assert!(dns_label(c), "{name}: container {c}");
            assert!(
                container["image"].as_str().is_some_and(|i| !i.is_empty()),
                "{c}"
            );
            for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                let volume = mount["name"].as_str().unwrap();
                assert!(volumes.contains(&volume), "{c}: mounts undeclared {volume}");
            }
            for env in container["env"].as_array().into_iter().flatten() {
                if let Some(secret) = env["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    // Created by hand, as the file's first comment says; never committed.
                    assert_eq!(secret, "idempotency-redis", "{c}");
                }
            }
        }
    }
    for service in of_kind("Service") {
        let name = service["metadata"]["name"].as_str().unwrap();
        let selector = &service["spec"]["selector"];
        assert!(
            workload_labels.iter().any(|labels| selector
                .as_object()
                .expect("a selector")
                .iter()
                .all(|(k, v)| &labels[k] == v)),
            "Service {name} selects no workload"
        );
        for port in service["spec"]["ports"].as_array().expect("ports") {
            let port_name = port["name"].as_str().unwrap_or_default();
            assert!(
                port_name.starts_with("tcp-") || port_name.starts_with("http-"),
                "Service {name}: port name {port_name:?} does not tell Istio its protocol"
            );
        }
    }
    // Redis's user is the one the e2e tests run.
    let redis_args: Vec<&str> = of_kind("StatefulSet")[0]["spec"]["template"]["spec"]["containers"]
        [0]["args"]
        .as_array()
        .expect("redis args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let user = redis_args
        .iter()
        .position(|a| *a == "--user")
        .expect("--user in Redis's args");
    assert_eq!(
        redis_args[user + 1..user + 4],
        ["default", "on", ">$(REDIS_PASSWORD)"]
    );
    assert_eq!(
        redis_args[user + 4..],
        *envoy_runner::redis::REDIS_USER_RULES,
        "the StatefulSet's Redis user differs from the e2e tests'"
    );
    // Every workload has its sidecar, or the mesh policies name no one.
    for workload in of_kind("StatefulSet")
        .into_iter()
        .chain(of_kind("Deployment"))
    {
        assert_eq!(
            workload["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"],
            "true"
        );
    }
    let config = of_kind("ConfigMap")[0];
    let dir = repo_root().join(REDIS_DEPLOY);
    for file in ["redis.conf", "webdis.json"] {
        let shipped = std::fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(
            config["data"][file].as_str(),
            Some(shipped.as_str()),
            "the ConfigMap's {file} differs from {REDIS_DEPLOY}/{file}"
        );
    }
}

/// The audit-log alert rules are a well-formed Prometheus rules file and watch metrics the
/// filter defines (by the names Envoy's Prometheus output gives them).
#[test]
fn the_audit_log_alert_rules_watch_the_filters_metrics() {
    let root = repo_root();
    let rules = yaml_documents(&root.join("deploy/audit-log/prometheus-rules.yaml"));
    let source = std::fs::read_to_string(root.join("filters/audit-log/src/filter.rs")).unwrap();
    let groups = rules[0]["groups"].as_array().expect("groups");
    let mut watched = Vec::new();
    for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        assert!(rule["alert"].as_str().is_some_and(|a| !a.is_empty()));
        let expr = rule["expr"].as_str().expect("expr");
        for metric in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter_map(|w| w.strip_prefix("envoy_wasmcustom_banking_audit_log_"))
        {
            assert!(
                source.contains(&format!("\"{metric}\"")),
                "{} watches {metric}, which the filter does not define",
                rule["alert"]
            );
            watched.push(metric.to_string());
        }
    }
    for needed in ["records_dropped", "records_shipped", "records_buffered"] {
        assert!(watched.iter().any(|w| w == needed), "no alert on {needed}");
    }
}
