//! overlord-query: a search index over every durable finding of every job (tantivy, in the
//! coordinator's data directory), the query language, and the answers built on it (services,
//! hosts, facets, host history, job diffs). See `docs/QUERY.md` and the Query section of
//! `docs/DESIGN.md`.

pub mod bench;
pub mod compile;
pub mod corpus;
pub mod export;
pub mod extract;
pub mod fields;
pub mod follow;
pub mod import;
pub mod index;
pub mod lang;
pub mod priority;
pub mod rowcodec;
pub mod search;
pub mod state;
