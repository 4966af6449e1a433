//! The field registry: every name a query may use, its type, and where it lives in the index.
//!
//! The parser ([`crate::lang`]) does not know any field. [`Registry::resolve`] turns a name into a
//! [`FieldDef`]; the compiler types the value by [`Kind`]. Built-in fields are columns of the
//! index schema; *extension* fields (`country`, `asn`, `vuln`, `beacon.period`, anything an
//! enrichment adds) live under their name in the `ext` JSON column, so adding one is a
//! [`Registry::register`] call (or one line in [`EXTENSIONS`]) — no parser or schema change.

use crate::lang::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An address; values are addresses (`ip:10.0.0.1`) or CIDRs (`ip:10.0.0.0/8`).
    Ip,
    /// A CIDR over the address column (`net:127.0.0.0/24`).
    Net,
    U64,
    F64,
    Bool,
    /// Values: `2026-11-01`, `2026-11-01T12:00:00Z`, unix milliseconds.
    Date,
    /// Exact value, case-insensitive; prefix and wildcard allowed; facetable.
    Keyword,
    /// Tokenized text: words, phrases, prefixes.
    Text,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ip => "address",
            Kind::Net => "CIDR",
            Kind::U64 => "non-negative integer",
            Kind::F64 => "number",
            Kind::Bool => "true/false",
            Kind::Date => "date (YYYY-MM-DD, RFC 3339 or unix ms)",
            Kind::Keyword => "keyword",
            Kind::Text => "text",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// A column of the index schema, by its tantivy name.
    Builtin(&'static str),
    /// `ext.<name>` in the JSON column.
    Ext,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDef {
    pub name: String,
    pub kind: Kind,
    pub column: Column,
    pub doc: &'static str,
}

impl FieldDef {
    pub fn facetable(&self) -> bool {
        !matches!(self.kind, Kind::Text | Kind::Net)
    }
}

/// Built-in fields: (name, kind, column, description). The column names are the index schema's.
pub const BUILTIN: &[(&str, Kind, &str, &str)] = &[
    ("ip", Kind::Ip, "ip", "target address"),
    ("net", Kind::Net, "ip", "target address within a CIDR"),
    ("port", Kind::U64, "port", "port (0 = host-level finding)"),
    ("open", Kind::Bool, "open", "the port accepted a connection"),
    ("transport", Kind::Keyword, "transport", "tcp / udp"),
    (
        "service",
        Kind::Keyword,
        "service",
        "service name (ssh, http, ssl/http, ...)",
    ),
    (
        "product",
        Kind::Keyword,
        "product",
        "product name (nginx, OpenSSH, ...)",
    ),
    ("version", Kind::Keyword, "version", "product version"),
    ("cpe", Kind::Keyword, "cpe", "CPE names"),
    ("banner", Kind::Text, "banner", "raw banner text"),
    ("http.title", Kind::Text, "http_title", "HTML <title>"),
    ("http.status", Kind::U64, "http_status", "HTTP status code"),
    (
        "http.server",
        Kind::Keyword,
        "http_server",
        "HTTP Server header",
    ),
    (
        "tls.subject",
        Kind::Keyword,
        "tls_subject",
        "leaf certificate subject",
    ),
    (
        "tls.issuer",
        Kind::Keyword,
        "tls_issuer",
        "leaf certificate issuer",
    ),
    (
        "tls.expired",
        Kind::Bool,
        "tls_expired",
        "leaf certificate expired",
    ),
    (
        "tls.self_signed",
        Kind::Bool,
        "tls_self_signed",
        "leaf certificate self-signed",
    ),
    (
        "tls.sha256",
        Kind::Keyword,
        "tls_sha256",
        "leaf certificate fingerprint",
    ),
    (
        "ssh.hassh",
        Kind::Keyword,
        "ssh_hassh",
        "HASSH server fingerprint",
    ),
    (
        "ssh.key",
        Kind::Keyword,
        "ssh_key",
        "SSH host key fingerprint",
    ),
    (
        "has_screenshot",
        Kind::Bool,
        "has_screenshot",
        "a screenshot was taken",
    ),
    (
        "screen.text",
        Kind::Text,
        "screen_text",
        "OCR text of the screenshot",
    ),
    ("faces", Kind::U64, "faces", "faces on the screenshot"),
    (
        "logo",
        Kind::Keyword,
        "logo",
        "logos recognised on the screenshot",
    ),
    ("tag", Kind::Keyword, "tag", "enrichment tags"),
    (
        "email",
        Kind::Keyword,
        "email",
        "e-mail addresses read on the screen",
    ),
    (
        "leak",
        Kind::Keyword,
        "leak",
        "addresses found in a leak database",
    ),
    (
        "module",
        Kind::Keyword,
        "module",
        "modules that reported on this service",
    ),
    ("job", Kind::U64, "job", "job id"),
    (
        "minion",
        Kind::Keyword,
        "minion",
        "minion ids that reported",
    ),
    (
        "provider",
        Kind::Keyword,
        "provider",
        "providers of those minions",
    ),
    (
        "first_seen",
        Kind::Date,
        "first_seen",
        "earliest finding time",
    ),
    ("last_seen", Kind::Date, "last_seen", "latest finding time"),
];

/// Extension fields known from the start (filled when an enrichment provides them).
pub const EXTENSIONS: &[(&str, Kind, &str)] = &[
    ("country", Kind::Keyword, "country code (enrichment)"),
    ("asn", Kind::U64, "autonomous system number (enrichment)"),
    (
        "vuln",
        Kind::Keyword,
        "vulnerability ids, e.g. CVE-2024-1234 (enrichment)",
    ),
    ("beacon.period", Kind::F64, "beacon period in seconds"),
    ("beacon.score", Kind::F64, "beacon score 0..1"),
    ("beacon.dst", Kind::Keyword, "beacon destination"),
    (
        "beacon.is_beacon",
        Kind::Bool,
        "scored at or above the beacon threshold",
    ),
    ("redis.auth", Kind::Bool, "Redis requires AUTH"),
    ("ftp.anonymous", Kind::Bool, "FTP allows anonymous login"),
    ("vnc.auth", Kind::Bool, "VNC requires a password"),
    (
        "x11.open",
        Kind::Bool,
        "X server accepts unauthenticated clients",
    ),
    (
        "mqtt.accepted",
        Kind::Bool,
        "MQTT broker accepted an anonymous CONNECT",
    ),
    ("smtp.starttls", Kind::Bool, "SMTP offers STARTTLS"),
    (
        "dns.version_bind",
        Kind::Keyword,
        "DNS server's version.bind answer (DNS over TCP)",
    ),
    (
        "amqp.protocol",
        Kind::Keyword,
        "AMQP protocol version offered",
    ),
    ("amqp.cluster", Kind::Keyword, "RabbitMQ cluster name"),
    (
        "udp.state",
        Kind::Keyword,
        "UDP port state: open, open|filtered, closed, filtered",
    ),
];

/// The key of an extension field inside the `ext` JSON column: dots become `_` (tantivy reads a
/// dot in a JSON key as a path separator in fast-field column names).
pub fn ext_key(name: &str) -> String {
    name.replace('.', "_")
}

#[derive(Clone, Debug)]
pub struct Registry {
    fields: Vec<FieldDef>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut fields: Vec<FieldDef> = BUILTIN
            .iter()
            .map(|(n, k, c, d)| FieldDef {
                name: (*n).into(),
                kind: *k,
                column: Column::Builtin(c),
                doc: d,
            })
            .collect();
        fields.extend(EXTENSIONS.iter().map(|(n, k, d)| FieldDef {
            name: (*n).into(),
            kind: *k,
            column: Column::Ext,
            doc: d,
        }));
        Registry { fields }
    }
}

/// A field name the registry does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown field {name:?}; expected one of: {known}")]
pub struct UnknownField {
    pub name: String,
    pub span: Span,
    pub known: String,
}

impl Registry {
    /// Adds an extension field (stored under `ext.<name>`). Names are `[a-z0-9_.]+`.
    pub fn register(&mut self, name: &str, kind: Kind, doc: &'static str) -> Result<(), String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        {
            return Err(format!("bad field name {name:?}"));
        }
        if self.get(name).is_some() {
            return Err(format!("field {name:?} exists"));
        }
        if matches!(kind, Kind::Ip | Kind::Net) {
            return Err("address fields are built in".into());
        }
        self.fields.push(FieldDef {
            name: name.into(),
            kind,
            column: Column::Ext,
            doc,
        });
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn resolve(&self, name: &str, span: Span) -> Result<&FieldDef, UnknownField> {
        self.get(name).ok_or_else(|| UnknownField {
            name: name.into(),
            span,
            known: self.names().join(", "),
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|f| f.name.as_str()).collect()
    }

    pub fn all(&self) -> &[FieldDef] {
        &self.fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_fields_are_all_known() {
        let r = Registry::default();
        for n in [
            "ip",
            "net",
            "port",
            "transport",
            "service",
            "product",
            "version",
            "cpe",
            "banner",
            "http.title",
            "http.status",
            "http.server",
            "tls.subject",
            "tls.issuer",
            "tls.expired",
            "tls.self_signed",
            "ssh.hassh",
            "ssh.key",
            "has_screenshot",
            "screen.text",
            "faces",
            "logo",
            "tag",
            "email",
            "leak",
            "module",
            "job",
            "minion",
            "provider",
            "first_seen",
            "last_seen",
            "country",
            "asn",
            "vuln",
        ] {
            assert!(r.get(n).is_some(), "{n}");
        }
    }

    #[test]
    fn register_extension() {
        let mut r = Registry::default();
        r.register("whois.org", Kind::Keyword, "org").unwrap();
        assert_eq!(r.get("whois.org").unwrap().column, Column::Ext);
        assert!(r.register("whois.org", Kind::Keyword, "again").is_err());
        assert!(r.register("Bad Name", Kind::Keyword, "x").is_err());
        let e = r.resolve("nope", Span { start: 3, end: 7 }).unwrap_err();
        assert!(e.known.contains("whois.org"));
    }
}
