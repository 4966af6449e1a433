//! The finding schema: the typed, versioned contract between minions (also ones written in other
//! languages), the coordinator, storage, clients and external consumers.
//!
//! On the wire and in storage a finding is `kind` (a string) + `data` (a JSON document). This
//! module gives each kind one payload type ([`Payload`]); producers build payloads, consumers
//! parse them with [`Payload::parse`] and match on variants — no kind literal or field name is
//! read out of JSON anywhere else.
//!
//! Compatibility: a finding from a newer minion is never dropped. Its raw JSON is stored and served
//! as sent; [`Payload::parse`] returns [`Payload::Unknown`] for a kind this build does not know (or
//! a document that does not fit the kind's type), and lists the fields it does not know
//! ([`Parsed::unknown_fields`]). The coordinator counts both per job (`JobStatus`).
//!
//! `docs/SCHEMA.md` is generated from these types ([`markdown`]); a test fails when it is stale.

use schemars::{JsonSchema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub mod beacon;
pub mod enrichment;
pub mod scan;
pub mod screen;
pub mod service;

mod doc;
pub use doc::markdown;

pub use beacon::{Beacon, BeaconSummary};
pub use enrichment::{Enrichment, Leak};
pub use scan::{Banner, Noop, OpenPort, PortState, ScanMethod, Transport, UdpPort, UdpState};
pub use screen::{Rdp, ScreenProtocol, Screenshot, ScreenshotError, VncCapture, X11Capture};
pub use service::Service;

/// Version of the finding schema. Raised when a payload changes in a way an older reader cannot
/// ignore (a field removed, retyped or renamed); adding an optional field keeps the version.
pub const SCHEMA_VERSION: u32 = 1;

macro_rules! kinds {
    ($( $(#[doc = $doc:literal])* $variant:ident($ty:ty) = $name:literal ),* $(,)?) => {
        /// Every finding kind this build knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum FindingKind {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl FindingKind {
            pub const ALL: &'static [FindingKind] = &[$(FindingKind::$variant),*];

            /// The kind's name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( FindingKind::$variant => $name, )*
                }
            }

            /// The known kind named `s`, if any.
            pub fn from_name(s: &str) -> Option<FindingKind> {
                match s {
                    $( $name => Some(FindingKind::$variant), )*
                    _ => None,
                }
            }

            /// One line on what the kind is (its doc comment).
            pub fn description(self) -> &'static str {
                match self {
                    $( FindingKind::$variant => concat!($($doc),*).trim_ascii(), )*
                }
            }

            /// JSON Schema of the kind's payload (definitions go to `generator`).
            pub fn payload_schema(self, generator: &mut SchemaGenerator) -> Value {
                match self {
                    $( FindingKind::$variant => generator.subschema_for::<$ty>().to_value(), )*
                }
            }
        }

        /// A typed finding payload: one variant per kind, plus [`Payload::Unknown`].
        #[derive(Debug, Clone, PartialEq)]
        pub enum Payload {
            $( $(#[doc = $doc])* $variant($ty), )*
            /// A kind this build does not know, or a document that does not fit its kind's type:
            /// kept as sent.
            Unknown(UnknownFinding),
        }

        impl Payload {
            /// The known kind (None for [`Payload::Unknown`]).
            pub fn kind(&self) -> Option<FindingKind> {
                match self {
                    $( Payload::$variant(_) => Some(FindingKind::$variant), )*
                    Payload::Unknown(_) => None,
                }
            }

            /// The kind's name on the wire (the unknown kind's own name for [`Payload::Unknown`]).
            pub fn kind_name(&self) -> &str {
                match self {
                    $( Payload::$variant(_) => $name, )*
                    Payload::Unknown(u) => &u.kind,
                }
            }

            /// The payload as the finding's `data` document.
            pub fn to_data(&self) -> Value {
                match self {
                    $( Payload::$variant(p) => serde_json::to_value(p).unwrap_or(Value::Null), )*
                    Payload::Unknown(u) => u.data.clone(),
                }
            }

            fn parse_known(kind: FindingKind, data: &Value) -> Result<(Payload, Vec<String>), String> {
                match kind {
                    $( FindingKind::$variant => typed::<$ty>(data).map(|(p, u)| (Payload::$variant(p), u)), )*
                }
            }
        }

        $(
            impl From<$ty> for Payload {
                fn from(p: $ty) -> Payload {
                    Payload::$variant(p)
                }
            }
        )*
    };
}

kinds! {
    /// A port that accepted a connection (`portscan`).
    OpenPort(OpenPort) = "open_port",
    /// What a port said first (`banner`).
    Banner(Banner) = "banner",
    /// Service identification of one port (`service`).
    Service(Box<Service>) = "service",
    /// A captured screen; the PNG is the blob (`screenshot`).
    Screenshot(Box<Screenshot>) = "screenshot",
    /// A VNC server that wants a password (`screenshot`).
    VncAuth(Box<VncCapture>) = "vnc_auth",
    /// An X server that refused an unauthenticated client (`screenshot`).
    X11Refused(Box<X11Capture>) = "x11_refused",
    /// RDP security negotiation (`screenshot`).
    Rdp(Box<Rdp>) = "rdp",
    /// A server that broke the protocol or a cap while capturing (`screenshot`).
    ScreenshotError(ScreenshotError) = "screenshot_error",
    /// Enrichment of one image (`enrich`).
    Enrichment(Box<Enrichment>) = "enrichment",
    /// A known leaked address read on a screen (the coordinator's leak lookup).
    Leak(Leak) = "leak",
    /// One scored beacon sequence (`beacon`).
    Beacon(Box<Beacon>) = "beacon",
    /// Counters of one scored log (`beacon`).
    BeaconSummary(BeaconSummary) = "beacon_summary",
    /// One UDP port probed with protocol payloads (`udp`).
    Udp(Box<UdpPort>) = "udp",
    /// Exactly-once marker of the `noop` module.
    Noop(Noop) = "noop",
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finding this build cannot type: its kind and document as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownFinding {
    pub kind: String,
    pub data: Value,
    /// Why it is not typed: `None` for an unknown kind, else the reason the document does not fit
    /// the known kind's type.
    pub mismatch: Option<String>,
}

/// The result of parsing a finding's `kind` + `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub payload: Payload,
    /// Paths (`grab.new_field`) of fields the kind's type does not know (a newer producer).
    pub unknown_fields: Vec<String>,
}

impl Parsed {
    /// The finding is not fully understood by this build (unknown kind, a document that does not
    /// fit, or unknown fields).
    pub fn is_partial(&self) -> bool {
        matches!(self.payload, Payload::Unknown(_)) || !self.unknown_fields.is_empty()
    }
}

impl Payload {
    /// Types a finding's `kind` + `data`. Never fails: what does not fit is [`Payload::Unknown`].
    pub fn parse(kind: &str, data: &Value) -> Parsed {
        let unknown = |mismatch| Parsed {
            payload: Payload::Unknown(UnknownFinding {
                kind: kind.to_string(),
                data: data.clone(),
                mismatch,
            }),
            unknown_fields: Vec::new(),
        };
        let Some(k) = FindingKind::from_name(kind) else {
            return unknown(None);
        };
        match Payload::parse_known(k, data) {
            Ok((payload, unknown_fields)) => Parsed {
                payload,
                unknown_fields,
            },
            Err(e) => unknown(Some(e)),
        }
    }

    /// The payload's `data` as JSON text (the wire's `data_json`).
    pub fn to_json(&self) -> String {
        self.to_data().to_string()
    }
}

impl crate::job::FindingRecord {
    /// The stored finding, typed.
    pub fn parsed(&self) -> Parsed {
        Payload::parse(&self.kind, &self.data)
    }
}

/// Deserializes `data` as `T`, and lists the paths of the fields `T` does not know: the keys of
/// `data` that are missing from `T`'s own serialization (which works through tagged enums too).
/// A null or empty value is the same as an absent field, so it is never reported.
pub fn typed<T: DeserializeOwned + Serialize>(data: &Value) -> Result<(T, Vec<String>), String> {
    let t: T = T::deserialize(data).map_err(|e| e.to_string())?;
    let known = serde_json::to_value(&t).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    unknown_paths(data, &known, "", &mut unknown);
    Ok((t, unknown))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

fn unknown_paths(raw: &Value, known: &Value, prefix: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match (raw, known) {
        (Value::Object(r), Value::Object(k)) => {
            for (key, rv) in r {
                match k.get(key) {
                    Some(kv) => unknown_paths(rv, kv, &join(key), out),
                    None if is_empty(rv) => {}
                    None => out.push(join(key)),
                }
            }
        }
        (Value::Array(r), Value::Array(k)) => {
            for (i, (rv, kv)) in r.iter().zip(k).enumerate() {
                unknown_paths(rv, kv, &join(&i.to_string()), out);
            }
        }
        _ => {}
    }
}

/// The JSON Schema of every finding: `{kind, data}` pairs, one per known kind, with the payload
/// types under `$defs`. `overlord schema` prints it.
pub fn json_schema() -> Value {
    let mut generator = SchemaGenerator::default();
    let mut one_of = Vec::new();
    let mut kinds = Map::new();
    for k in FindingKind::ALL {
        let payload = k.payload_schema(&mut generator);
        kinds.insert(k.as_str().to_string(), payload.clone());
        one_of.push(json!({
            "type": "object",
            "required": ["kind", "data"],
            "properties": {
                "kind": {"const": k.as_str()},
                "data": payload,
            }
        }));
    }
    let defs: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://overlord.invalid/schema/finding/v{SCHEMA_VERSION}"),
        "title": "Overlord finding",
        "description": "A finding's kind and its data document (the wire's `kind` and `data_json`). Readers accept unknown kinds and unknown fields (stored and served as sent).",
        "x-schema-version": SCHEMA_VERSION,
        "x-kinds": kinds,
        "oneOf": one_of,
        "$defs": defs,
    })
}

#[cfg(test)]
pub(crate) mod tests;
