//! `docs/SCHEMA.md`, generated from the JSON Schema of the payload types (their doc comments are
//! the field descriptions).

use super::{FindingKind, SCHEMA_VERSION, json_schema};
use serde_json::Value;
use std::fmt::Write;

/// The Markdown reference of every kind and field (`overlord schema --markdown`).
pub fn markdown() -> String {
    let schema = json_schema();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Finding schema (version {SCHEMA_VERSION})\n\n\
         Generated from `crates/core/src/finding/` by `overlord schema --markdown`; do not edit by \
         hand (a test in `overlord-core` fails when this file is stale). The machine-readable form \
         is `overlord schema` (JSON Schema 2020-12).\n\n\
         A finding is a `kind` and a `data` document (`data_json` on the wire), with provenance \
         beside it (job, task, parent task, module, target, port, blob sha256, minion, provider, \
         times; see `proto/overlord/v1/common.proto`). `schema_version` on the wire says which \
         version of this schema the producer wrote.\n\n\
         **Compatibility.** Readers must accept kinds and fields they do not know: the coordinator \
         stores and serves such findings exactly as sent and counts them per job \
         (`findings_unknown_kind`, `findings_unknown_fields` in `JobStatus`). Optional fields \
         (`?`) may be absent or null. Adding an optional field keeps the version; removing, \
         renaming or retyping a field raises it.\n"
    );
    let _ = writeln!(out, "## Kinds\n\n| kind | payload | what |\n|---|---|---|");
    let kinds = &schema["x-kinds"];
    for k in FindingKind::ALL {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            k.as_str(),
            type_text(&kinds[k.as_str()]),
            k.description()
        );
    }
    let _ = writeln!(out, "\n## Types\n");
    if let Some(defs) = schema["$defs"].as_object() {
        for (name, def) in defs {
            let _ = writeln!(out, "### {name}\n");
            if let Some(d) = def.get("description").and_then(Value::as_str) {
                let _ = writeln!(out, "{}\n", one_line(d));
            }
            write_body(&mut out, def);
            out.push('\n');
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn write_body(out: &mut String, def: &Value) {
    if def.get("properties").is_some() {
        write_fields(out, def);
    } else if let Some(vals) = def.get("enum").and_then(Value::as_array) {
        let _ = writeln!(out, "One of: {}.", enum_text(vals));
    } else if let Some(vs) = def.get("oneOf").and_then(Value::as_array) {
        let _ = writeln!(out, "One of:\n");
        for v in vs {
            let desc = v
                .get("description")
                .and_then(Value::as_str)
                .map(|d| format!(" — {}", one_line(d)))
                .unwrap_or_default();
            if let Some(c) = v.get("const") {
                let _ = writeln!(out, "- `{c}`{desc}");
            } else if let Some(vals) = v.get("enum").and_then(Value::as_array) {
                let _ = writeln!(out, "- {}{desc}", enum_text(vals));
            } else if v.get("properties").is_some() {
                let tag = v["properties"]
                    .as_object()
                    .and_then(|p| {
                        p.iter()
                            .find_map(|(k, s)| s.get("const").map(|c| format!("`{k}` = {c}")))
                    })
                    .or_else(|| {
                        v["required"]
                            .as_array()
                            .and_then(|r| r.first())
                            .and_then(Value::as_str)
                            .map(|k| format!("`{k}`: {}", type_text(&v["properties"][k])))
                    })
                    .unwrap_or_default();
                let with = v
                    .get("$ref")
                    .map(|r| {
                        format!(
                            ", with the fields of {}",
                            type_text(&serde_json::json!({ "$ref": r }))
                        )
                    })
                    .unwrap_or_default();
                let _ = writeln!(out, "- {tag}{with}{desc}\n");
                if v["properties"].as_object().is_some_and(|p| p.len() <= 1) {
                    continue;
                }
                let mut inner = String::new();
                write_fields(&mut inner, v);
                for line in inner.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            } else {
                let _ = writeln!(out, "- {}{desc}", type_text(v));
            }
        }
    } else {
        let _ = writeln!(out, "Type: {}.", type_text(def));
    }
}

fn write_fields(out: &mut String, def: &Value) {
    let Some(props) = def.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = def
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let _ = writeln!(out, "| field | type | description |\n|---|---|---|");
    for (name, p) in props {
        let opt = if required.contains(&name.as_str()) {
            ""
        } else {
            "?"
        };
        let desc = p
            .get("description")
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        let _ = writeln!(out, "| `{name}`{opt} | {} | {desc} |", type_text(p));
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn enum_text(vals: &[Value]) -> String {
    vals.iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short reading of a schema: `string`, `u32`, `[Word]`, `Tls?`, ...
fn type_text(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(c) = s.get("const") {
        return format!("`{c}`");
    }
    if let Some(vals) = s.get("enum").and_then(Value::as_array) {
        return enum_text(vals);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(vs) = s.get(key).and_then(Value::as_array) {
            let non_null: Vec<&Value> = vs.iter().filter(|v| v["type"] != "null").collect();
            let nullable = non_null.len() < vs.len();
            let t = non_null
                .iter()
                .map(|v| type_text(v))
                .collect::<Vec<_>>()
                .join(" \\| ");
            return if nullable { format!("{t} or null") } else { t };
        }
    }
    let fmt = s.get("format").and_then(Value::as_str);
    let one = |t: &str| -> String {
        match (t, fmt) {
            ("integer", Some(f)) => f.to_string(),
            ("number", Some(f)) => f.to_string(),
            ("array", _) => match (s.get("items"), s.get("prefixItems")) {
                (_, Some(Value::Array(items))) => format!(
                    "({})",
                    items.iter().map(type_text).collect::<Vec<_>>().join(", ")
                ),
                (Some(items), _) => {
                    let n = s.get("minItems").filter(|m| Some(*m) == s.get("maxItems"));
                    match n {
                        Some(n) => format!("[{}; {n}]", type_text(items)),
                        None => format!("[{}]", type_text(items)),
                    }
                }
                _ => "array".into(),
            },
            (t, _) => t.to_string(),
        }
    };
    match s.get("type") {
        Some(Value::String(t)) => one(t),
        Some(Value::Array(ts)) => {
            let non_null: Vec<String> = ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .map(one)
                .collect();
            let t = non_null.join(" \\| ");
            if ts.iter().any(|t| t == "null") {
                format!("{t} or null")
            } else {
                t
            }
        }
        _ => "any".into(),
    }
}
