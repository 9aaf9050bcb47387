//! From located YAML nodes to typed values, collecting every error on the way.
//!
//! Each type of the fleet format implements [`Decode`]: it turns a node into a value or
//! reports why it can't (returning `None` after pushing diagnostics), and it describes
//! itself as JSON Schema. Structs are declared once with [`yaml_struct!`], which writes the
//! struct, its decoder (unknown fields with "did you mean", missing required fields) and
//! its schema from the same field list, so the three can't drift apart.

use crate::diag::{Code, Diagnostic, Span};
use crate::yaml::{Node, ScalarKind, Value};
use serde_json::{Value as Json, json};
use std::cell::OnceCell;
use std::collections::BTreeMap;

/// Decoding state for one file: its name, the path to the current node, the findings.
#[derive(Debug)]
pub struct Cx {
    file: String,
    path: Vec<(String, Span)>,
    /// The JSON Schema of the file's root type, the source of `known_paths`.
    root_schema: fn() -> Json,
    /// Every field path the file's format knows (`health.probe`), for suggestions. Built
    /// on the first unknown field only: generating the schema costs more than decoding
    /// a whole coin file, and a valid file never needs it.
    known_paths: OnceCell<Vec<String>>,
    /// What was found so far.
    pub diagnostics: Vec<Diagnostic>,
}

impl Cx {
    /// A context for `file`, whose root type's schema is `root_schema` (e.g.
    /// `CoinFile::schema`), called only if a suggestion needs it.
    pub fn new(file: &str, root_schema: fn() -> Json) -> Cx {
        Cx {
            file: file.to_string(),
            path: Vec::new(),
            root_schema,
            known_paths: OnceCell::new(),
            diagnostics: Vec::new(),
        }
    }

    fn known_paths(&self) -> &[String] {
        self.known_paths.get_or_init(|| {
            let mut paths = Vec::new();
            collect_paths(&(self.root_schema)(), "", &mut paths);
            paths
        })
    }

    /// The file being decoded.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The dotted path of the current node, e.g. `placement.zones[1]`.
    pub fn path(&self) -> String {
        let mut s = String::new();
        for (seg, _) in &self.path {
            if !s.is_empty() && !seg.starts_with('[') {
                s.push('.');
            }
            s.push_str(seg);
        }
        s
    }

    fn path_with(&self, name: &str) -> String {
        let p = self.path();
        if p.is_empty() {
            name.to_string()
        } else {
            format!("{p}.{name}")
        }
    }

    /// Report a finding.
    pub fn report(&mut self, code: Code, span: Span, message: String, help: &str) {
        self.diagnostics
            .push(Diagnostic::error(code, &self.file, span, message).with_help(help));
    }

    /// Run `f` with `seg` appended to the path.
    pub fn at<T>(&mut self, seg: String, span: Span, f: impl FnOnce(&mut Cx) -> T) -> T {
        self.path.push((seg, span));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Report that `node` is not of the `expected` kind.
    pub fn wrong_type(&mut self, node: &Node, expected: &str) {
        let mut help = format!("write {expected} here");
        if let Value::Scalar(s) = &node.value {
            if s.plain && expected.contains("string") && s.kind() != ScalarKind::Str {
                help = format!(
                    "YAML reads unquoted `{}` as {}; quote it to make it a string: \"{}\"",
                    s.text,
                    node.describe(),
                    s.text
                );
            } else if !s.plain && expected.contains("integer") {
                help = "remove the quotes: numbers are written without them".into();
            }
        }
        let what = match self.path() {
            p if p.is_empty() => "the document".to_string(),
            p => format!("`{p}`"),
        };
        self.report(
            Code::WrongType,
            node.span,
            format!("{what} must be {expected}, found {}", node.describe()),
            &help,
        );
    }

    /// Check that `node` is a mapping whose keys are all among `known`; report the others.
    pub fn mapping<'n>(&mut self, node: &'n Node, known: &[&str]) -> Option<Fields<'n>> {
        let entries: &[(Node, Node)] = match &node.value {
            Value::Map(e) => e,
            _ => {
                self.wrong_type(node, "a mapping of `key: value` lines");
                return None;
            }
        };
        for (k, _) in entries {
            let Some(name) = k.scalar().map(|s| s.text.as_str()) else {
                continue; // reported by the parser
            };
            if known.contains(&name) {
                continue;
            }
            let help = if name == "<<" {
                "merge keys (`<<`) are not part of the fleet format; fleet.yaml `defaults` holds settings shared by all coins".to_string()
            } else {
                self.suggest(name, known)
            };
            let code = if name == "<<" {
                Code::UnsupportedYaml
            } else {
                Code::UnknownField
            };
            let what = if self.path().is_empty() {
                "at the top level".to_string()
            } else {
                format!("in `{}`", self.path())
            };
            self.report(
                code,
                k.span,
                format!("unknown field `{name}` {what}"),
                &help,
            );
        }
        Some(Fields {
            entries,
            span: node.span,
        })
    }

    fn suggest(&self, name: &str, known: &[&str]) -> String {
        let close = |a: &str, b: &str| {
            let d = strsim::damerau_levenshtein(&a.to_lowercase(), &b.to_lowercase());
            let limit = (a.len().max(b.len()) / 3).clamp(1, 3);
            (d <= limit).then_some(d)
        };
        let local = known
            .iter()
            .filter_map(|k| close(name, k).map(|d| (d, *k)))
            .min();
        if let Some((_, k)) = local {
            return format!("did you mean `{k}`?");
        }
        // The right name in the wrong section: `bake` at the top of a coin file.
        let here = self.path();
        let elsewhere: Vec<&String> = self
            .known_paths()
            .iter()
            .filter(|p| {
                let leaf = p.rsplit('.').next().unwrap_or(p);
                leaf == name || close(name, leaf) == Some(0)
            })
            .filter(|p| p.rsplit_once('.').map_or("", |(parent, _)| parent) != here)
            .collect();
        if let Some(p) = elsewhere.first() {
            return format!("did you mean `{p}`? `{name}` belongs in another section");
        }
        if known.is_empty() {
            "remove it: this mapping takes no fields".into()
        } else {
            format!("remove it, or use one of: {}", known.join(", "))
        }
    }

    /// Decode required field `name` of `f`; `about` says what it holds, for the error.
    pub fn req<T: Decode>(&mut self, f: &Fields<'_>, name: &str, about: &str) -> Option<T> {
        match f.get(name) {
            Some((k, v)) if !v.is_null() => {
                self.at(name.to_string(), k.span, |cx| T::decode(v, cx))
            }
            Some((k, _)) => {
                let p = self.path_with(name);
                self.report(
                    Code::MissingField,
                    k.span,
                    format!("`{p}` has no value"),
                    &format!("`{name}` is required: {}", first_sentence(about)),
                );
                None
            }
            None => {
                let p = self.path_with(name);
                let span = self.path.last().map_or(Span::FILE_START, |(_, s)| *s);
                let span = if self.path.is_empty() { f.span } else { span };
                self.report(
                    Code::MissingField,
                    span,
                    format!("missing required field `{p}`"),
                    &format!("add `{name}:` ({})", first_sentence(about)),
                );
                None
            }
        }
    }

    /// Decode optional field `name`: `Some(None)` when absent or null, `None` when invalid.
    pub fn opt<T: Decode>(&mut self, f: &Fields<'_>, name: &str) -> Option<Option<T>> {
        match f.get(name) {
            Some((k, v)) if !v.is_null() => self
                .at(name.to_string(), k.span, |cx| T::decode(v, cx))
                .map(Some),
            _ => Some(None),
        }
    }
}

fn first_sentence(s: &str) -> &str {
    let s = s.trim();
    match s.find(". ") {
        Some(i) => &s[..i],
        None => s.trim_end_matches('.'),
    }
}

fn collect_paths(schema: &Json, prefix: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Json::as_object) {
        for (name, sub) in props {
            let p = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            out.push(p.clone());
            collect_paths(sub, &p, out);
        }
    }
}

/// The entries of a mapping already checked for unknown keys.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'n> {
    entries: &'n [(Node, Node)],
    span: Span,
}

impl<'n> Fields<'n> {
    /// The key and value nodes of `name`.
    pub fn get(&self, name: &str) -> Option<&'n (Node, Node)> {
        self.entries
            .iter()
            .find(|(k, _)| k.scalar().is_some_and(|s| s.text == name))
    }
}

/// A type of the fleet format: decodable from YAML, describable as JSON Schema.
pub trait Decode: Sized {
    /// Decode `node`, or push diagnostics to `cx` and return `None`.
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self>;
    /// This type as a JSON Schema fragment.
    fn schema() -> Json;
}

/// A value and where it was written, for errors found after decoding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Its place in the file.
    pub span: Span,
}

impl<T: Decode> Decode for Spanned<T> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        T::decode(node, cx).map(|value| Spanned {
            value,
            span: node.span,
        })
    }
    fn schema() -> Json {
        T::schema()
    }
}

/// A list item kept in its list even when it is invalid (its error is reported): for rules
/// that ask whether a list was written at all, so that an invalid item is not reported a
/// second time as a missing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<T>(pub Option<T>);

impl<T: Decode> Decode for Checked<T> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        Some(Checked(T::decode(node, cx)))
    }
    fn schema() -> Json {
        T::schema()
    }
}

impl Decode for String {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        match node.scalar() {
            Some(s) if s.kind() == ScalarKind::Str => Some(s.text.clone()),
            _ => {
                cx.wrong_type(node, "a string");
                None
            }
        }
    }
    fn schema() -> Json {
        json!({"type": "string"})
    }
}

impl Decode for bool {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        match node.scalar().map(|s| s.kind()) {
            Some(ScalarKind::Bool(b)) => Some(b),
            _ => {
                cx.wrong_type(node, "true or false");
                None
            }
        }
    }
    fn schema() -> Json {
        json!({"type": "boolean"})
    }
}

/// Integers are decoded wide and range-checked by the rule that owns the field, so that
/// `nodes_per_zone: -1` is reported as "below 1", not as a type error.
impl Decode for i128 {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        match node.scalar() {
            Some(s) if s.kind() == ScalarKind::Int => match s.as_int() {
                Some(v) => Some(v),
                None => {
                    let p = cx.path();
                    cx.report(
                        Code::OutOfRange,
                        node.span,
                        format!("`{p}` is far too large"),
                        "use a realistic number",
                    );
                    None
                }
            },
            _ => {
                cx.wrong_type(node, "an integer");
                None
            }
        }
    }
    fn schema() -> Json {
        json!({"type": "integer"})
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let Value::Seq(items) = &node.value else {
            cx.wrong_type(node, "a list (`[a, b]` or lines starting with `- `)");
            return None;
        };
        // Items that fail are reported and left out; the rest still go through the
        // cross-field rules, so one bad item doesn't hide the file's other errors. (A
        // file with any error never becomes desired state.)
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(v) = cx.at(format!("[{i}]"), item.span, |cx| T::decode(item, cx)) {
                out.push(v);
            }
        }
        Some(out)
    }
    fn schema() -> Json {
        json!({"type": "array", "items": T::schema()})
    }
}

/// A list that must hold at least one item (`minItems: 1` in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmpty<T>(pub Vec<T>);

impl<T> std::ops::Deref for NonEmpty<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Decode> Decode for NonEmpty<T> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let items = Vec::<T>::decode(node, cx)?;
        if matches!(&node.value, Value::Seq(s) if s.is_empty()) {
            let p = cx.path();
            cx.report(
                Code::MissingField,
                node.span,
                format!("`{p}` is empty"),
                "list at least one item",
            );
            return None;
        }
        Some(NonEmpty(items))
    }
    fn schema() -> Json {
        json!({"type": "array", "items": T::schema(), "minItems": 1})
    }
}

/// A mapping with free-form keys (environment variables, tags, metrics), in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entries<K, V>(pub Vec<(Spanned<K>, Spanned<V>)>);

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<K: Decode, V: Decode> Decode for Entries<K, V> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            cx.wrong_type(node, "a mapping of `NAME: value` lines");
            return None;
        };
        // As for lists: bad entries are reported and left out, the rest are checked.
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(name) = k.scalar().map(|s| s.text.clone()) else {
                continue; // a non-scalar key, reported by the parser
            };
            let key = cx.at(name.clone(), k.span, |cx| Spanned::<K>::decode(k, cx));
            let val = cx.at(name, k.span, |cx| Spanned::<V>::decode(v, cx));
            if let (Some(k), Some(v)) = (key, val) {
                out.push((k, v));
            }
        }
        Some(Entries(out))
    }
    fn schema() -> Json {
        json!({"type": "object", "propertyNames": K::schema(), "additionalProperties": V::schema()})
    }
}

impl<K: Ord + Clone, V: Clone> Entries<K, V> {
    /// The entries as a sorted map.
    pub fn to_map(&self) -> BTreeMap<K, V> {
        self.0
            .iter()
            .map(|(k, v)| (k.value.clone(), v.value.clone()))
            .collect()
    }
}

/// Join doc-comment lines into one description.
pub fn doc(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_string()
}

/// Declare a struct of the fleet format: the struct, its decoder and its JSON Schema.
///
/// Each field is `req name: Type` or `opt name: Type` (an `Option<Type>`), optionally
/// `as "yaml-name"` when the YAML key is a Rust keyword.
#[macro_export]
macro_rules! yaml_struct {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $fdoc:literal])*
                $req:ident $field:ident $(as $yname:literal)? : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $crate::yaml_struct!(@ty $req $ty), )*
        }

        impl $crate::decode::Decode for $name {
            fn decode(node: &$crate::yaml::Node, cx: &mut $crate::decode::Cx) -> Option<Self> {
                const FIELDS: &[&str] = &[$($crate::yaml_struct!(@name $field $($yname)?)),*];
                let f = cx.mapping(node, FIELDS)?;
                $(
                    let $field = $crate::yaml_struct!(@get $req cx f
                        ($crate::yaml_struct!(@name $field $($yname)?))
                        (concat!($($fdoc, " ",)* "")) $ty);
                )*
                Some($name { $( $field: $field?, )* })
            }

            fn schema() -> serde_json::Value {
                let mut props = serde_json::Map::new();
                let mut required: Vec<&str> = Vec::new();
                $(
                    let name = $crate::yaml_struct!(@name $field $($yname)?);
                    let mut s = <$ty as $crate::decode::Decode>::schema();
                    let d = $crate::decode::doc(&[$($fdoc),*]);
                    if let (Some(obj), false) = (s.as_object_mut(), d.is_empty()) {
                        obj.insert("description".into(), serde_json::Value::String(d));
                    }
                    props.insert(name.into(), s);
                    if stringify!($req) == "req" { required.push(name); }
                )*
                serde_json::json!({
                    "type": "object",
                    "description": $crate::decode::doc(&[$($sdoc),*]),
                    "properties": props,
                    "required": required,
                    "additionalProperties": false,
                })
            }
        }
    };
    (@ty req $ty:ty) => { $ty };
    (@ty opt $ty:ty) => { Option<$ty> };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $yname:literal) => { $yname };
    (@get req $cx:ident $f:ident ($name:expr) ($about:expr) $ty:ty) => { $cx.req::<$ty>(&$f, $name, $about) };
    (@get opt $cx:ident $f:ident ($name:expr) ($about:expr) $ty:ty) => { $cx.opt::<$ty>(&$f, $name) };
}

/// Declare a string enum of the fleet format (`approval: major`).
#[macro_export]
macro_rules! yaml_enum {
    (
        $(#[doc = $sdoc:literal])*
        pub enum $name:ident { $( $(#[doc = $vdoc:literal])* $variant:ident = $text:literal ),* $(,)? }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $( $(#[doc = $vdoc])* $variant, )* }

        impl $name {
            /// The YAML spelling of each value.
            pub const VALUES: &'static [&'static str] = &[$($text),*];
            /// The YAML spelling.
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text,)* } }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }

        impl $crate::decode::Decode for $name {
            fn decode(node: &$crate::yaml::Node, cx: &mut $crate::decode::Cx) -> Option<Self> {
                let text = match node.scalar() {
                    Some(s) if !matches!(s.kind(), $crate::yaml::ScalarKind::Int | $crate::yaml::ScalarKind::Float) => s.text.as_str(),
                    _ => { cx.wrong_type(node, &format!("one of: {}", Self::VALUES.join(", "))); return None; }
                };
                match text {
                    $($text => Some($name::$variant),)*
                    other => {
                        let p = cx.path();
                        let near = Self::VALUES.iter().copied()
                            .min_by_key(|v| strsim::levenshtein(&other.to_lowercase(), v));
                        let help = match near {
                            Some(v) if strsim::levenshtein(&other.to_lowercase(), v) <= 2 => format!("did you mean `{v}`?"),
                            _ => format!("use one of: {}", Self::VALUES.join(", ")),
                        };
                        cx.report($crate::diag::Code::InvalidEnum, node.span,
                            format!("`{p}` is `{other}`, which is not one of: {}", Self::VALUES.join(", ")), &help);
                        None
                    }
                }
            }
            fn schema() -> serde_json::Value {
                serde_json::json!({"type": "string", "enum": Self::VALUES})
            }
        }
    };
}
