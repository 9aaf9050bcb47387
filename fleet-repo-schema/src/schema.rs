//! JSON Schema (draft 2020-12) of the two file kinds, for editors (yaml-language-server)
//! and for other tools. Generated from the same declarations the loader decodes with.

use crate::decode::Decode;
use crate::files::{CoinFile, FleetFile};
use serde_json::{Value, json};

/// The file kinds of a fleet repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `fleet.yaml`.
    Fleet,
    /// `coins/<coin>.yaml`.
    Coin,
}

impl Kind {
    /// Both kinds.
    pub const ALL: [Kind; 2] = [Kind::Fleet, Kind::Coin];

    /// File name used for this kind's schema, e.g. `coin.schema.json`.
    pub fn file_name(self) -> &'static str {
        match self {
            Kind::Fleet => "fleet.schema.json",
            Kind::Coin => "coin.schema.json",
        }
    }
}

/// The JSON Schema of one file kind.
pub fn schema(kind: Kind) -> Value {
    let (mut body, title) = match kind {
        Kind::Fleet => (FleetFile::schema(), "fleet.yaml"),
        Kind::Coin => (CoinFile::schema(), "coins/<coin>.yaml"),
    };
    if let Some(obj) = body.as_object_mut() {
        let mut head = serde_json::Map::new();
        head.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        head.insert(
            "$id".into(),
            json!(format!("https://fleet.dev/schema/{}", kind.file_name())),
        );
        head.insert("title".into(), json!(title));
        head.extend(std::mem::take(obj));
        *obj = head;
    }
    body
}

/// The schema as pretty JSON with a trailing newline, as `fleet schema` prints it.
pub fn schema_text(kind: Kind) -> String {
    let mut s = serde_json::to_string_pretty(&schema(kind)).expect("schema serializes");
    s.push('\n');
    s
}
