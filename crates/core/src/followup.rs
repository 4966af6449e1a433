//! Follow-up rules as data: which findings spawn which tasks.
//!
//! A [`Rule`] matches a finding by kind and by conditions on its payload's fields (typed by
//! `crate::finding`), and spawns the first of its actions whose module the job enabled. The
//! built-in chain ([`builtin`]) is written in the same rule language as the rules a job adds at
//! submission ([`RuleSet`]); every rule is validated against the finding schema ([`validate`]),
//! so a rule naming a field that does not exist — or a renamed schema field under a built-in
//! rule — is an error naming the rule and the field, and rule cycles are refused.
//!
//! Text form (one rule; `overlord scan --rule`, `JobSpec.rules` on the wire):
//!
//! ```text
//! [NAME:] KIND [COND ...] -> MODULE [KEY=VALUE ...] [| MODULE [KEY=VALUE ...] ...]
//! COND  = FIELD=V[|V...]   the field equals one of the values
//!       | FIELD?           the field is present and not null, false, "" or empty
//! VALUE = $FIELD           the finding's field (`$blob` = its blob sha256)
//!       | JSON or a bare word (a string)
//! ```
//!
//! FIELD is a dotted path into the payload (`grab.grabber`, `tls.version`), or `port` / `target`
//! (the finding's own port and address). Examples: `open_port -> service | banner`,
//! `open_port port=5900 -> screenshot protocol=vnc`, `service product=Redis -> banner`.
//!
//! A follow-up task gets the finding's target and port (a network module needs both; the rule
//! does not fire without them) and, for modules that read a blob (`enrich`), the finding's blob
//! (no blob, no task).

use crate::finding::{FindingKind, Payload, json_schema};
use crate::modules::{self, RootKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::LazyLock;

/// Most rules a job may add.
pub const MAX_RULES: usize = 64;
/// Longest rule text.
pub const MAX_RULE_LEN: usize = 1024;

/// One follow-up rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    /// The kind of finding it looks at.
    pub kind: FindingKind,
    /// All must hold.
    #[serde(default)]
    pub when: Vec<Condition>,
    /// Alternatives: the first whose module the job enabled is spawned.
    pub then: Vec<Action>,
}

/// A condition on one field of the finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// Dotted path into the payload, or `port` / `target`.
    pub field: String,
    pub test: Test,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// Equals one of these values.
    OneOf(Vec<Value>),
    /// Present and not null, false, "" or empty.
    Present,
}

/// A task to spawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub module: String,
    /// Task params: literal JSON values, or references to the finding's fields.
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    Value(Value),
    /// The value of a field of the finding (`blob` = its blob sha256).
    Field(String),
}

/// Rules a job adds to the built-in ones, and built-in rules it disables (by name).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleSet {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable: Vec<String>,
}

impl RuleSet {
    /// The rules in force: the built-in ones not disabled, then the added ones.
    pub fn effective(&self) -> impl Iterator<Item = &Rule> {
        BUILTIN
            .iter()
            .filter(|r| !self.disable.contains(&r.name))
            .chain(self.add.iter())
    }
}

/// The built-in chain, in rule text.
pub const BUILTIN_TEXT: &[&str] = &[
    "port-service: open_port -> service | banner",
    "open-desktop-screenshot: service screenshot=vnc|x11 -> screenshot protocol=$screenshot",
    "screenshot-enrich: screenshot -> enrich",
    "emails-leak: enrichment emails? -> leak emails=$emails image=$blob",
];

static BUILTIN: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    BUILTIN_TEXT
        .iter()
        .map(|t| parse_rule(t, "builtin").expect("built-in rules parse"))
        .collect()
});

/// The built-in rules.
pub fn builtin() -> &'static [Rule] {
    &BUILTIN
}

/// Why a rule was refused; always names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule {rule:?}: {reason}")]
    Syntax { rule: String, reason: String },
    #[error("rule {rule:?}: unknown finding kind {kind:?}; known kinds: {known}")]
    UnknownKind {
        rule: String,
        kind: String,
        known: String,
    },
    #[error("rule {rule:?}: kind `{kind}` has no field `{field}`{hint}")]
    UnknownField {
        rule: String,
        kind: String,
        field: String,
        hint: String,
    },
    #[error("rule {rule:?}: field `{field}` of `{kind}` is never {value} (one of {allowed})")]
    BadValue {
        rule: String,
        kind: String,
        field: String,
        value: String,
        allowed: String,
    },
    #[error("rule {rule:?}: unknown module {module:?}")]
    UnknownModule { rule: String, module: String },
    #[error("rule {rule:?}: {reason}")]
    Invalid { rule: String, reason: String },
    #[error("rules form a cycle: {0}")]
    Cycle(String),
}

fn value_text(v: &Value) -> String {
    match v {
        // a bare word when it reads back as the same string
        Value::String(s) if parse_value(s) == *v && !s.contains(['|', ' ', '=']) => s.clone(),
        v => v.to_string(),
    }
}

/// The rule in text form ([`parse_rule`] reads it back).
impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.kind)?;
        for c in &self.when {
            match &c.test {
                Test::Present => write!(f, " {}?", c.field)?,
                Test::OneOf(vals) => write!(
                    f,
                    " {}={}",
                    c.field,
                    vals.iter().map(value_text).collect::<Vec<_>>().join("|")
                )?,
            }
        }
        f.write_str(" ->")?;
        for (i, a) in self.then.iter().enumerate() {
            if i > 0 {
                f.write_str(" |")?;
            }
            write!(f, " {}", a.module)?;
            for (k, p) in &a.params {
                match p {
                    Param::Value(v) => write!(f, " {k}={}", value_text(v))?,
                    Param::Field(field) => write!(f, " {k}=${field}")?,
                }
            }
        }
        Ok(())
    }
}

/// Modules whose task reads the finding's blob (a follow-up to them needs one).
const BLOB_MODULES: &[&str] = &["enrich"];

/// The kinds each module reports (for the cycle check). A module not listed is taken to report
/// nothing a rule matches; add a line with a new module.
pub fn produces(module: &str) -> &'static [FindingKind] {
    use FindingKind as K;
    match module {
        "portscan" => &[K::OpenPort],
        "banner" => &[K::Banner],
        "service" => &[K::Service],
        "screenshot" => &[
            K::Screenshot,
            K::VncAuth,
            K::X11Refused,
            K::Rdp,
            K::ScreenshotError,
        ],
        "enrich" => &[K::Enrichment],
        "leak" => &[K::Leak],
        "beacon" => &[K::Beacon, K::BeaconSummary],
        "noop" => &[K::Noop],
        _ => &[],
    }
}

/// Field names every kind has (the finding's own, not its payload's).
const RESERVED_FIELDS: &[&str] = &["port", "target"];
/// Extra names a parameter may reference.
const RESERVED_PARAMS: &[&str] = &["port", "target", "blob"];

fn syntax(rule: &str, reason: impl Into<String>) -> RuleError {
    RuleError::Syntax {
        rule: rule.to_string(),
        reason: reason.into(),
    }
}

/// A bare word is a string; anything that reads as JSON (numbers, `true`, `"quoted"`) is JSON.
fn parse_value(v: &str) -> Value {
    match serde_json::from_str::<Value>(v) {
        Ok(x @ (Value::Number(_) | Value::Bool(_) | Value::String(_) | Value::Null)) => x,
        _ => Value::String(v.to_string()),
    }
}

/// Parses one rule in text form (see the module docs). `default_name` names a rule without a
/// `NAME:` prefix. The result is not validated against the schema yet ([`validate`]).
pub fn parse_rule(text: &str, default_name: &str) -> Result<Rule, RuleError> {
    let shown = || text.chars().take(80).collect::<String>();
    if text.len() > MAX_RULE_LEN {
        return Err(syntax(
            &shown(),
            format!("{} bytes, over the limit of {MAX_RULE_LEN}", text.len()),
        ));
    }
    let mut tokens: Vec<&str> = text.split_whitespace().collect();
    let mut name = default_name.to_string();
    if let Some(first) = tokens.first()
        && let Some(n) = first.strip_suffix(':')
    {
        name = n.to_string();
        tokens.remove(0);
    }
    let arrows: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == "->")
        .map(|(i, _)| i)
        .collect();
    let [arrow] = arrows[..] else {
        return Err(syntax(
            &name,
            "expected `KIND [CONDITION ...] -> MODULE [PARAM ...]` (one `->`, spaced)",
        ));
    };
    let (lhs, rhs) = (&tokens[..arrow], &tokens[arrow + 1..]);
    let Some((kind, conds)) = lhs.split_first() else {
        return Err(syntax(&name, "no finding kind before `->`"));
    };
    let kind = FindingKind::from_name(kind).ok_or_else(|| RuleError::UnknownKind {
        rule: name.clone(),
        kind: kind.to_string(),
        known: FindingKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let mut when = Vec::new();
    for c in conds {
        if let Some(field) = c.strip_suffix('?') {
            when.push(Condition {
                field: field.to_string(),
                test: Test::Present,
            });
        } else if let Some((field, vals)) = c.split_once('=') {
            if vals.is_empty() {
                return Err(syntax(&name, format!("condition `{c}` has no value")));
            }
            when.push(Condition {
                field: field.to_string(),
                test: Test::OneOf(vals.split('|').map(parse_value).collect()),
            });
        } else {
            return Err(syntax(
                &name,
                format!("condition `{c}`: expected FIELD=VALUE[|VALUE...] or FIELD?"),
            ));
        }
        if when.last().is_some_and(|w| w.field.is_empty()) {
            return Err(syntax(&name, format!("condition `{c}` names no field")));
        }
    }
    let mut then = Vec::new();
    for alt in rhs.split(|t| *t == "|") {
        let Some((module, params)) = alt.split_first() else {
            return Err(syntax(&name, "an empty action (nothing after `->` or `|`)"));
        };
        if module.contains('=') {
            return Err(syntax(
                &name,
                format!("action `{module}`: expected a module name first"),
            ));
        }
        let mut ps = BTreeMap::new();
        for p in params {
            let Some((k, v)) = p.split_once('=') else {
                return Err(syntax(
                    &name,
                    format!("param `{p}` of {module}: expected KEY=VALUE or KEY=$FIELD"),
                ));
            };
            let v = match v.strip_prefix('$') {
                Some(f) => Param::Field(f.to_string()),
                None => Param::Value(parse_value(v)),
            };
            if ps.insert(k.to_string(), v).is_some() {
                return Err(syntax(
                    &name,
                    format!("param `{k}` of {module} given twice"),
                ));
            }
        }
        then.push(Action {
            module: module.to_string(),
            params: ps,
        });
    }
    Ok(Rule {
        name,
        kind,
        when,
        then,
    })
}

static SCHEMA: LazyLock<Value> = LazyLock::new(json_schema);

/// The alternatives a schema stands for (references, nullable options, tagged enum variants
/// and list items open up).
fn alternatives<'a>(s: &'a Value, out: &mut Vec<&'a Value>) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        alternatives(&SCHEMA["$defs"][name], out);
    }
    let mut composite = false;
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(vs) = s.get(key).and_then(Value::as_array) {
            composite = true;
            for v in vs {
                alternatives(v, out);
            }
        }
    }
    if let Some(items) = s.get("items") {
        composite = true;
        alternatives(items, out);
    }
    if s.get("properties").is_some() || s.get("enum").is_some() || s.get("const").is_some() {
        out.push(s);
    } else if !composite && s.get("$ref").is_none() {
        out.push(s);
    }
}

/// The schemas `path` reaches in `kind`'s payload; empty when the field does not exist.
fn field_schemas(kind: FindingKind, path: &str) -> Vec<&'static Value> {
    let mut cur: Vec<&'static Value> = vec![&SCHEMA["x-kinds"][kind.as_str()]];
    for seg in path.split('.') {
        let mut alts = Vec::new();
        for c in &cur {
            alternatives(c, &mut alts);
        }
        let mut next = Vec::new();
        for a in alts {
            if let Some(p) = a.get("properties").and_then(|p| p.get(seg)) {
                next.push(p);
            }
        }
        if next.is_empty() {
            return next;
        }
        cur = next;
    }
    cur
}

fn top_fields(kind: FindingKind) -> Vec<String> {
    let mut alts = Vec::new();
    alternatives(&SCHEMA["x-kinds"][kind.as_str()], &mut alts);
    let mut out: BTreeSet<String> = alts
        .iter()
        .filter_map(|a| a.get("properties").and_then(Value::as_object))
        .flat_map(|p| p.keys().cloned())
        .collect();
    out.extend(RESERVED_FIELDS.iter().map(|s| s.to_string()));
    out.into_iter().collect()
}

fn check_field(
    rule: &Rule,
    field: &str,
    reserved: &[&str],
) -> Result<Vec<&'static Value>, RuleError> {
    if reserved.contains(&field) {
        return Ok(Vec::new());
    }
    let found = field_schemas(rule.kind, field);
    if found.is_empty() {
        return Err(RuleError::UnknownField {
            rule: rule.name.clone(),
            kind: rule.kind.as_str().to_string(),
            field: field.to_string(),
            hint: format!(" (its fields: {})", top_fields(rule.kind).join(", ")),
        });
    }
    Ok(found)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Checks one rule against the finding schema and the module catalog.
pub fn validate(rule: &Rule) -> Result<(), RuleError> {
    let invalid = |reason: String| RuleError::Invalid {
        rule: rule.name.clone(),
        reason,
    };
    if !valid_name(&rule.name) {
        return Err(invalid(
            "a rule name is 1-64 characters of letters, digits, `-`, `_`, `.`".into(),
        ));
    }
    if rule.then.is_empty() {
        return Err(invalid("no action".into()));
    }
    for c in &rule.when {
        let schemas = check_field(rule, &c.field, RESERVED_FIELDS)?;
        if let Test::OneOf(vals) = &c.test {
            if vals.is_empty() {
                return Err(invalid(format!("condition on `{}` has no value", c.field)));
            }
            // values of an enum field must be among its values
            let mut alts = Vec::new();
            for s in &schemas {
                alternatives(s, &mut alts);
            }
            let allowed: Vec<&Value> = alts
                .iter()
                .filter_map(|a| a.get("enum").and_then(Value::as_array))
                .flatten()
                .chain(alts.iter().filter_map(|a| a.get("const")))
                .collect();
            let open = alts.iter().any(|a| {
                a.get("enum").is_none() && a.get("const").is_none() && a["type"] != "null"
            });
            if !allowed.is_empty() && !open {
                for v in vals {
                    if !allowed.contains(&v) {
                        return Err(RuleError::BadValue {
                            rule: rule.name.clone(),
                            kind: rule.kind.as_str().to_string(),
                            field: c.field.clone(),
                            value: v.to_string(),
                            allowed: allowed
                                .iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
            }
        }
    }
    for a in &rule.then {
        if modules::info(&a.module).is_none() {
            return Err(RuleError::UnknownModule {
                rule: rule.name.clone(),
                module: a.module.clone(),
            });
        }
        for (k, p) in &a.params {
            if k.is_empty() {
                return Err(invalid(format!("a param of {} has no name", a.module)));
            }
            if let Param::Field(f) = p {
                check_field(rule, f, RESERVED_PARAMS)?;
            }
        }
    }
    Ok(())
}

impl RuleSet {
    /// Parses a job's rule texts and disabled names (added rules without a `NAME:` are named
    /// `job-1`, `job-2`, ...) and validates the result ([`RuleSet::validate`]).
    pub fn from_text(add: &[String], disable: &[String]) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet::default();
        for (i, t) in add.iter().enumerate() {
            set.add.push(parse_rule(t, &format!("job-{}", i + 1))?);
        }
        for d in disable {
            let d = d.trim();
            if !d.is_empty() && !set.disable.iter().any(|x| x == d) {
                set.disable.push(d.to_string());
            }
        }
        set.validate()?;
        Ok(set)
    }

    /// Every added rule fits the schema, names are unique, disabled names exist, and the rules
    /// in force have no cycle.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.add.len() > MAX_RULES {
            return Err(RuleError::Invalid {
                rule: self.add[MAX_RULES].name.clone(),
                reason: format!("a job adds at most {MAX_RULES} rules"),
            });
        }
        for d in &self.disable {
            if !BUILTIN.iter().any(|r| &r.name == d) {
                return Err(RuleError::Invalid {
                    rule: d.clone(),
                    reason: format!(
                        "no built-in rule has this name (built-in: {})",
                        BUILTIN
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        let mut names = BTreeSet::new();
        for r in self.effective() {
            if !names.insert(r.name.as_str()) {
                return Err(RuleError::Invalid {
                    rule: r.name.clone(),
                    reason: "two rules have this name".into(),
                });
            }
        }
        for r in &self.add {
            validate(r)?;
        }
        check_cycles(self.effective())
    }
}

/// Refuses rules whose findings lead back to their own kind (kind → module → kinds it reports).
pub fn check_cycles<'a>(rules: impl Iterator<Item = &'a Rule>) -> Result<(), RuleError> {
    // edges: kind -> (rule, module, next kind)
    let mut edges: BTreeMap<FindingKind, Vec<(&'a str, &'a str, FindingKind)>> = BTreeMap::new();
    for r in rules {
        for a in &r.then {
            for k in produces(&a.module) {
                edges
                    .entry(r.kind)
                    .or_default()
                    .push((&r.name, &a.module, *k));
            }
        }
    }
    // depth-first search with the path kept for the message
    fn visit<'a>(
        k: FindingKind,
        edges: &BTreeMap<FindingKind, Vec<(&'a str, &'a str, FindingKind)>>,
        path: &mut Vec<(FindingKind, &'a str, &'a str)>,
        done: &mut BTreeSet<FindingKind>,
    ) -> Result<(), RuleError> {
        if let Some(at) = path.iter().position(|(pk, _, _)| *pk == k) {
            let cycle: Vec<String> = path[at..]
                .iter()
                .map(|(pk, rule, m)| format!("{pk} -[{rule}]-> {m}"))
                .collect();
            return Err(RuleError::Cycle(format!("{} -> {k}", cycle.join(" -> "))));
        }
        if done.contains(&k) {
            return Ok(());
        }
        for (rule, module, next) in edges.get(&k).into_iter().flatten() {
            path.push((k, rule, module));
            visit(*next, edges, path, done)?;
            path.pop();
        }
        done.insert(k);
        Ok(())
    }
    let mut done = BTreeSet::new();
    for k in FindingKind::ALL {
        visit(*k, &edges, &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

/// The parts of a finding the rules look at.
#[derive(Clone, Debug)]
pub struct FindingView<'a> {
    pub payload: &'a Payload,
    pub target: Option<IpAddr>,
    pub port: Option<u16>,
    pub blob_sha256: Option<&'a str>,
}

/// A task to spawn (its parent is the task that produced the finding).
#[derive(Clone, Debug, PartialEq)]
pub struct FollowUp {
    /// The rule that spawned it.
    pub rule: String,
    pub module: String,
    pub target: Option<IpAddr>,
    pub ports: Vec<u16>,
    pub params: Value,
    pub blob_sha256: Option<String>,
}

/// Every value `path` reaches in `data` (through lists).
fn lookup<'v>(data: &'v Value, path: &str) -> Vec<&'v Value> {
    let mut cur = vec![data];
    for seg in path.split('.') {
        let mut next = Vec::new();
        for v in cur {
            match v {
                Value::Object(m) => next.extend(m.get(seg)),
                Value::Array(a) => next.extend(a.iter().filter_map(|x| x.get(seg))),
                _ => {}
            }
        }
        cur = next;
    }
    cur
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => true,
    }
}

fn matches_one_of(v: &Value, vals: &[Value]) -> bool {
    match v {
        Value::Array(a) => a.iter().any(|x| vals.contains(x)),
        v => vals.contains(v),
    }
}

/// The tasks `f` spawns under `rules` in a job that enabled `enabled`. A finding this build
/// cannot type ([`Payload::Unknown`]) spawns nothing.
pub fn follow_ups(rules: &RuleSet, enabled: &[String], f: &FindingView<'_>) -> Vec<FollowUp> {
    let Some(kind) = f.payload.kind() else {
        return Vec::new();
    };
    let on = |m: &str| enabled.iter().any(|e| e == m);
    let mut data: Option<Value> = None;
    let mut out = Vec::new();
    for rule in rules.effective().filter(|r| r.kind == kind) {
        let special = |field: &str| -> Option<Value> {
            match field {
                "port" => Some(f.port.map(Value::from).unwrap_or(Value::Null)),
                "target" => Some(
                    f.target
                        .map(|t| Value::from(t.to_string()))
                        .unwrap_or(Value::Null),
                ),
                _ => None,
            }
        };
        let mut holds = true;
        for c in &rule.when {
            let reached: Vec<Value> = match special(&c.field) {
                Some(v) => vec![v],
                None => {
                    let d = data.get_or_insert_with(|| f.payload.to_data());
                    lookup(d, &c.field).into_iter().cloned().collect()
                }
            };
            holds = match &c.test {
                Test::Present => reached.iter().any(present),
                Test::OneOf(vals) => reached.iter().any(|v| matches_one_of(v, vals)),
            };
            if !holds {
                break;
            }
        }
        if !holds {
            continue;
        }
        let Some(action) = rule.then.iter().find(|a| on(&a.module)) else {
            continue;
        };
        let network = matches!(
            modules::info(&action.module).map(|m| m.root),
            Some(RootKind::Network { .. })
        );
        if network && (f.target.is_none() || f.port.is_none()) {
            continue;
        }
        let blob = BLOB_MODULES.contains(&action.module.as_str());
        if blob && f.blob_sha256.is_none() {
            continue;
        }
        let mut params = Map::new();
        for (k, p) in &action.params {
            let v = match p {
                Param::Value(v) => v.clone(),
                Param::Field(field) if field == "blob" => {
                    f.blob_sha256.map(Value::from).unwrap_or(Value::Null)
                }
                Param::Field(field) => match special(field) {
                    Some(v) => v,
                    None => {
                        let d = data.get_or_insert_with(|| f.payload.to_data());
                        lookup(d, field)
                            .first()
                            .map(|v| (*v).clone())
                            .unwrap_or(Value::Null)
                    }
                },
            };
            params.insert(k.clone(), v);
        }
        out.push(FollowUp {
            rule: rule.name.clone(),
            module: action.module.clone(),
            target: f.target,
            ports: f.port.into_iter().collect(),
            params: if params.is_empty() {
                Value::Null
            } else {
                Value::Object(params)
            },
            blob_sha256: if blob {
                f.blob_sha256.map(str::to_string)
            } else {
                None
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::ScreenProtocol;
    use serde_json::json;

    fn en(m: &[&str]) -> Vec<String> {
        m.iter().map(|s| s.to_string()).collect()
    }

    fn view<'a>(payload: &'a Payload, blob: Option<&'a str>) -> FindingView<'a> {
        FindingView {
            payload,
            target: Some("127.0.0.1".parse().unwrap()),
            port: Some(5900),
            blob_sha256: blob,
        }
    }

    /// A sample payload of `kind` with `patch` merged over its data.
    fn payload(kind: &str, patch: Value) -> Payload {
        let base = crate::finding::tests::samples()
            .into_iter()
            .find(|p| p.kind_name() == kind)
            .expect("sample");
        let mut data = base.to_data();
        if let (Value::Object(d), Value::Object(p)) = (&mut data, patch) {
            d.extend(p);
        }
        let parsed = Payload::parse(kind, &data);
        assert!(!parsed.is_partial(), "{parsed:?}");
        parsed.payload
    }

    fn builtin_only() -> RuleSet {
        RuleSet::default()
    }

    #[test]
    fn builtin_rules_fit_the_schema() {
        // Renaming or retyping a payload field a built-in rule reads (e.g. the service report's
        // `screenshot` hint) fails here, in a fast unit test, instead of silently stopping the
        // chain (which only an Xvfb + x11vnc run would have noticed).
        for r in builtin() {
            validate(r).unwrap_or_else(|e| panic!("built-in rule {}: {e}", r.name));
        }
        RuleSet::default().validate().unwrap();
        assert_eq!(builtin().len(), BUILTIN_TEXT.len());
    }

    #[test]
    fn the_typed_screenshot_hint_drives_the_screenshot_rule() {
        // Built from the typed payload: a renamed Rust field fails to compile, a renamed serde
        // field stops matching and fails this test.
        for proto in [ScreenProtocol::Vnc, ScreenProtocol::X11] {
            let mut p = payload("service", json!({}));
            if let Payload::Service(s) = &mut p {
                s.screenshot = Some(proto);
            }
            let fu = follow_ups(
                &builtin_only(),
                &en(&["service", "screenshot"]),
                &view(&p, None),
            );
            assert_eq!(fu.len(), 1, "{proto:?}");
            assert_eq!(fu[0].module, "screenshot");
            assert_eq!(fu[0].rule, "open-desktop-screenshot");
            assert_eq!(fu[0].params, json!({"protocol": proto.as_str()}));
        }
    }

    #[test]
    fn open_port_spawns_service_else_banner() {
        let p = payload("open_port", json!({}));
        let f = view(&p, None);
        let rs = builtin_only();
        assert_eq!(
            follow_ups(&rs, &en(&["portscan", "service", "banner"]), &f)[0].module,
            "service"
        );
        let fu = follow_ups(&rs, &en(&["portscan", "banner"]), &f);
        assert_eq!(fu[0].module, "banner");
        assert_eq!(fu[0].ports, vec![5900]);
        assert_eq!(fu[0].params, Value::Null);
        assert!(follow_ups(&rs, &en(&["portscan"]), &f).is_empty());
        let no_port = FindingView { port: None, ..f };
        assert!(
            follow_ups(&rs, &en(&["portscan", "service"]), &no_port).is_empty(),
            "a network module needs a port"
        );
    }

    #[test]
    fn service_spawns_screenshot_and_screenshot_spawns_enrich() {
        let rs = builtin_only();
        let p = payload("service", json!({"screenshot": "vnc"}));
        let f = view(&p, None);
        let fu = follow_ups(&rs, &en(&["service", "screenshot"]), &f);
        assert_eq!(fu[0].module, "screenshot");
        assert_eq!(fu[0].params, json!({"protocol": "vnc"}));
        assert!(follow_ups(&rs, &en(&["service"]), &f).is_empty());
        let p2 = payload("service", json!({"screenshot": "rdp"}));
        assert!(follow_ups(&rs, &en(&["service", "screenshot"]), &view(&p2, None)).is_empty());
        let p3 = payload("service", json!({"screenshot": null}));
        assert!(follow_ups(&rs, &en(&["service", "screenshot"]), &view(&p3, None)).is_empty());
        let shot = payload("screenshot", json!({}));
        let fu = follow_ups(
            &rs,
            &en(&["screenshot", "enrich"]),
            &view(&shot, Some("ab")),
        );
        assert_eq!(fu[0].module, "enrich");
        assert_eq!(fu[0].blob_sha256.as_deref(), Some("ab"));
        assert!(follow_ups(&rs, &en(&["screenshot", "enrich"]), &view(&shot, None)).is_empty());
        let banner = payload("banner", json!({}));
        assert!(follow_ups(&rs, &en(&["banner", "portscan"]), &view(&banner, None)).is_empty());
    }

    #[test]
    fn enrichment_with_emails_spawns_one_leak_lookup() {
        let rs = builtin_only();
        let p = payload(
            "enrichment",
            json!({"emails": ["a@b.example", "c@d.example"], "text": "x"}),
        );
        let f = view(&p, Some("ab"));
        let fu = follow_ups(&rs, &en(&["enrich", "leak"]), &f);
        assert_eq!(fu.len(), 1);
        assert_eq!(fu[0].module, "leak");
        assert_eq!(fu[0].ports, vec![5900]);
        assert_eq!(fu[0].blob_sha256, None, "the lookup needs no image bytes");
        assert_eq!(
            fu[0].params,
            json!({"emails": ["a@b.example", "c@d.example"], "image": "ab"})
        );
        assert!(
            follow_ups(&rs, &en(&["enrich"]), &f).is_empty(),
            "leak not enabled"
        );
        let none = payload("enrichment", json!({"emails": [], "text": "x"}));
        assert!(follow_ups(&rs, &en(&["enrich", "leak"]), &view(&none, Some("ab"))).is_empty());
    }

    #[test]
    fn a_job_adds_and_disables_rules() {
        let rs = RuleSet::from_text(
            &["vnc-direct: open_port port=5900|5901 -> screenshot protocol=vnc".into()],
            &["port-service".into()],
        )
        .unwrap();
        let p = payload("open_port", json!({}));
        let fu = follow_ups(
            &rs,
            &en(&["portscan", "service", "screenshot"]),
            &view(&p, None),
        );
        assert_eq!(fu.len(), 1, "{fu:?}");
        assert_eq!(fu[0].rule, "vnc-direct");
        assert_eq!(fu[0].module, "screenshot");
        assert_eq!(fu[0].params, json!({"protocol": "vnc"}));
        let other = FindingView {
            port: Some(22),
            ..view(&p, None)
        };
        assert!(follow_ups(&rs, &en(&["portscan", "service", "screenshot"]), &other).is_empty());

        // a rule on a grabber field: redis services get a banner grab
        let rs = RuleSet::from_text(&["service grab.grabber=redis -> banner".into()], &[]).unwrap();
        let mut svc = payload("service", json!({"screenshot": null}));
        if let Payload::Service(s) = &mut svc {
            s.grab = Some(crate::finding::service::Grab::Redis(
                crate::finding::service::RedisGrab {
                    auth_required: false,
                    protected_mode: false,
                    version: Some("7.0.15".into()),
                    mode: None,
                    os: None,
                    role: None,
                    error: None,
                },
            ));
        }
        let fu = follow_ups(&rs, &en(&["service", "banner"]), &view(&svc, None));
        assert_eq!(fu.len(), 1);
        assert_eq!(
            (fu[0].rule.as_str(), fu[0].module.as_str()),
            ("job-1", "banner")
        );
    }

    #[test]
    fn list_fields_match_any_element() {
        let rs = RuleSet::from_text(
            &["enrichment tags=login_prompt -> leak emails=$emails".into()],
            &[],
        )
        .unwrap();
        let p = payload(
            "enrichment",
            json!({"tags": ["has_text", "login_prompt"], "emails": []}),
        );
        let fu = follow_ups(&rs, &en(&["enrich", "leak"]), &view(&p, None));
        assert_eq!(fu.len(), 1);
        assert_eq!(fu[0].params, json!({"emails": []}));
    }

    #[test]
    fn errors_name_the_rule_and_the_field() {
        let e = RuleSet::from_text(&["typo: service screnshot=vnc -> screenshot".into()], &[])
            .unwrap_err();
        assert!(
            matches!(&e, RuleError::UnknownField { rule, field, .. } if rule == "typo" && field == "screnshot"),
            "{e}"
        );
        assert!(
            e.to_string().contains("screenshot"),
            "the hint lists the real fields: {e}"
        );
        let e =
            RuleSet::from_text(&["service screenshot=vcn -> screenshot".into()], &[]).unwrap_err();
        assert!(
            matches!(&e, RuleError::BadValue { rule, field, .. } if rule == "job-1" && field == "screenshot"),
            "{e}"
        );
        let e = RuleSet::from_text(&["r: service tls.chain.subjct? -> banner".into()], &[])
            .unwrap_err();
        assert!(e.to_string().contains("tls.chain.subjct"), "{e}");
        RuleSet::from_text(&["r: service tls.chain.subject? -> banner".into()], &[]).unwrap();
        let e = RuleSet::from_text(&["r: service -> redis".into()], &[]).unwrap_err();
        assert_eq!(
            e,
            RuleError::UnknownModule {
                rule: "r".into(),
                module: "redis".into()
            }
        );
        let e = RuleSet::from_text(&["r: open_prot -> service".into()], &[]).unwrap_err();
        assert!(matches!(e, RuleError::UnknownKind { .. }), "{e}");
        let e = RuleSet::from_text(&["r: open_port service".into()], &[]).unwrap_err();
        assert!(matches!(e, RuleError::Syntax { .. }), "{e}");
        let e = RuleSet::from_text(&["r: open_port -> screenshot protocol=$nope".into()], &[])
            .unwrap_err();
        assert!(
            matches!(&e, RuleError::UnknownField { field, .. } if field == "nope"),
            "{e}"
        );
        let e = RuleSet::from_text(&[], &["no-such-rule".into()]).unwrap_err();
        assert!(e.to_string().contains("port-service"), "{e}");
        let e = RuleSet::from_text(&["port-service: open_port -> banner".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("two rules"), "{e}");
        // replacing a built-in rule: disable it and add one under its name
        RuleSet::from_text(
            &["port-service: open_port -> banner".into()],
            &["port-service".into()],
        )
        .unwrap();
    }

    #[test]
    fn cycles_are_refused() {
        let e = RuleSet::from_text(&["loop: service -> service".into()], &[]).unwrap_err();
        assert!(matches!(e, RuleError::Cycle(_)), "{e}");
        assert!(e.to_string().contains("loop"), "{e}");
        // longer: screenshot -> enrich (built-in) and enrichment -> screenshot
        let e = RuleSet::from_text(&["back: enrichment emails? -> screenshot".into()], &[])
            .unwrap_err();
        assert!(
            e.to_string().contains("back") && e.to_string().contains("screenshot-enrich"),
            "{e}"
        );
    }

    #[test]
    fn rule_text_round_trips() {
        for r in builtin() {
            assert_eq!(&parse_rule(&r.to_string(), "x").unwrap(), r, "{r}");
        }
        let r = parse_rule(
            "x: open_port port=5900|5901 target? -> screenshot protocol=vnc n=3 | banner",
            "d",
        )
        .unwrap();
        assert_eq!(r.when[0].test, Test::OneOf(vec![json!(5900), json!(5901)]));
        assert_eq!(r.when[1].test, Test::Present);
        assert_eq!(r.then.len(), 2);
        assert_eq!(r.then[0].params["n"], Param::Value(json!(3)));
        assert_eq!(parse_rule(&r.to_string(), "d").unwrap(), r);
    }

    #[test]
    fn an_unknown_payload_spawns_nothing() {
        let p = Payload::parse("tls_fingerprint", &json!({"screenshot": "vnc"})).payload;
        assert!(follow_ups(&builtin_only(), &en(&["screenshot"]), &view(&p, None)).is_empty());
    }
}
