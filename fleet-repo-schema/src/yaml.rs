//! A YAML document as a tree of nodes that remember where they came from.
//!
//! Serde-based loaders stop at the first error and forget positions once a value is
//! deserialized. fleet needs every error of a file, each with line and column, so it
//! builds its own small tree from `yaml-rust2`'s event stream, with hard limits that make
//! hostile input cheap to reject:
//!
//! * nesting deeper than [`MAX_DEPTH`] is refused while parsing (the tree is never built,
//!   so dropping it can't overflow the stack);
//! * aliases are expanded against a budget of [`MAX_NODES`] nodes in total, so an
//!   alias bomb ("billion laughs") fails after a few thousand node copies, not after gigabytes;
//! * duplicate mapping keys are errors (YAML says they are; many parsers keep the last);
//! * only one document per file; keys must be scalars; tags other than `!!str` are refused.
//!
//! Plain scalars are typed by the YAML 1.2 core schema (`true`, `12`, `1.5`, `~` are not
//! strings); quoted and block scalars are always strings.

use crate::diag::{Code, Diagnostic, Pos, Span};
use std::collections::HashMap;
use yaml_rust2::Event;
use yaml_rust2::parser::Parser;
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting of sequences and mappings accepted. The fleet files need 4.
pub const MAX_DEPTH: usize = 32;
/// Most nodes a document may have, counting every copy an alias makes.
pub const MAX_NODES: usize = 20_000;

/// A scalar's text and how it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The scalar's value after YAML unescaping and folding.
    pub text: String,
    /// Written without quotes or block indicator: subject to core-schema typing.
    pub plain: bool,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar (string, number, boolean or null, see [`Scalar::kind`]).
    Scalar(Scalar),
    /// A sequence (list).
    Seq(Vec<Node>),
    /// A mapping, in source order. Keys are scalars (enforced while building).
    Map(Vec<(Node, Node)>),
}

/// One YAML node and the place it starts in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The node's value.
    pub value: Value,
    /// Where the node is written.
    pub span: Span,
}

/// The core-schema type of a plain scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarKind {
    /// `~`, `null`, or nothing at all.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer (decimal, `0o` octal or `0x` hex).
    Int,
    /// A floating point number.
    Float,
    /// Anything else, and every quoted or block scalar.
    Str,
}

impl Scalar {
    /// The YAML 1.2 core-schema type of this scalar.
    pub fn kind(&self) -> ScalarKind {
        if !self.plain {
            return ScalarKind::Str;
        }
        let t = self.text.as_str();
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
            "true" | "True" | "TRUE" => return ScalarKind::Bool(true),
            "false" | "False" | "FALSE" => return ScalarKind::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf"
            | "-.INF" | ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float,
            _ => {}
        }
        if is_core_int(t) {
            ScalarKind::Int
        } else if is_core_float(t) {
            ScalarKind::Float
        } else {
            ScalarKind::Str
        }
    }

    /// The integer value of a plain core-schema integer, if it fits in an `i128`.
    pub fn as_int(&self) -> Option<i128> {
        if self.kind() != ScalarKind::Int {
            return None;
        }
        let t = self.text.as_str();
        if let Some(h) = t.strip_prefix("0x") {
            i128::from_str_radix(h, 16).ok()
        } else if let Some(o) = t.strip_prefix("0o") {
            i128::from_str_radix(o, 8).ok()
        } else {
            t.parse().ok()
        }
    }
}

fn is_core_int(t: &str) -> bool {
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(h) = t.strip_prefix("0x") {
        return digits(h, 16);
    }
    if let Some(o) = t.strip_prefix("0o") {
        return digits(o, 8);
    }
    let body = t.strip_prefix(['-', '+']).unwrap_or(t);
    digits(body, 10)
}

fn is_core_float(t: &str) -> bool {
    // [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let s = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            int.chars().all(|c| c.is_ascii_digit())
                && frac.chars().all(|c| c.is_ascii_digit())
                && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.chars().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exp_ok
}

impl Node {
    /// A short name of what this node is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.value {
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Scalar(s) => match s.kind() {
                ScalarKind::Null => "an empty value (null)",
                ScalarKind::Bool(_) => "a boolean",
                ScalarKind::Int => "an integer",
                ScalarKind::Float => "a number",
                ScalarKind::Str => "a string",
            },
        }
    }

    /// The scalar, if this node is one.
    pub fn scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this node is a null scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.kind() == ScalarKind::Null)
    }

    /// This node as JSON, the way a JSON Schema validator (an editor) sees the YAML.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Scalar(s) => match s.kind() {
                ScalarKind::Null => J::Null,
                ScalarKind::Bool(b) => J::Bool(b),
                ScalarKind::Int => match s.as_int().and_then(|i| i64::try_from(i).ok()) {
                    Some(i) => J::from(i),
                    None => J::from(s.text.parse::<f64>().unwrap_or(f64::MAX)),
                },
                ScalarKind::Float => s
                    .text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(J::Null, J::Number),
                ScalarKind::Str => J::String(s.text.clone()),
            },
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .filter_map(|(k, v)| Some((k.scalar()?.text.clone(), v.to_json())))
                    .collect(),
            ),
        }
    }

    /// Number of nodes in this subtree (itself included).
    fn size(&self) -> usize {
        match &self.value {
            Value::Scalar(_) => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Value::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// The outcome of parsing one file.
#[derive(Debug)]
pub struct Parsed {
    /// The document, or `None` when the file holds no document or could not be parsed.
    pub root: Option<Node>,
    /// Errors found while parsing (a syntax error ends parsing; duplicate keys do not).
    pub diagnostics: Vec<Diagnostic>,
}

/// Source text with a table of line starts, to turn positions into spans.
#[derive(Debug)]
pub struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    /// Split at YAML line breaks: `\n`, `\r\n`, and a lone `\r` (as the parser counts them).
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        let b = text.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            if c == b'\n' || (c == b'\r' && b.get(i + 1) != Some(&b'\n')) {
                starts.push(i + 1);
            }
        }
        Lines { text, starts }
    }

    /// The text of 1-based line `line`, without its line break.
    pub fn line(&self, line: u32) -> Option<&'a str> {
        let i = (line as usize).checked_sub(1)?;
        let start = *self.starts.get(i)?;
        let end = self.starts.get(i + 1).map_or(self.text.len(), |e| e - 1);
        Some(self.text[start..end].trim_end_matches('\r'))
    }

    /// Number of lines.
    pub fn count(&self) -> usize {
        self.starts.len()
    }

    /// `span` moved inside the text: the parser reports "end of input" one line past the
    /// last, or one column past a line's end after some edits; point at the real end.
    pub fn clamp(&self, span: Span) -> Span {
        let last = self.count() as u32;
        let mut start = span.start;
        if start.line > last {
            start.line = last;
            start.col = u32::MAX;
        }
        let width = self.line(start.line).map_or(0, |l| l.chars().count()) as u32;
        start.col = start.col.clamp(1, width + 1);
        let len = span.len.min((width + 1).saturating_sub(start.col).max(1));
        Span { start, len }
    }
}

/// Where a marker points, as a 1-based line and column.
fn pos(m: &Marker) -> Pos {
    Pos {
        line: m.line().max(1) as u32,
        col: m.col() as u32 + 1,
    }
}

/// The span of a scalar starting at `p`: to the end of its token on that line.
///
/// Runs for every scalar of every file, so it walks the line's characters in place
/// rather than collecting them.
fn scalar_span(lines: &Lines<'_>, p: Pos, style: TScalarStyle, text: &str) -> Span {
    let Some(line) = lines.line(p.line) else {
        return Span::point(p);
    };
    // The line from the scalar's first character on (empty if the column is past its end).
    let rest = line
        .char_indices()
        .nth(p.col as usize - 1)
        .map_or("", |(at, _)| &line[at..]);
    let len = match style {
        TScalarStyle::DoubleQuoted => quoted_len(rest, '"'),
        TScalarStyle::SingleQuoted => quoted_len(rest, '\''),
        TScalarStyle::Plain if !text.contains('\n') && rest.starts_with(text) => {
            text.chars().count()
        }
        _ => 1,
    };
    Span {
        start: p,
        len: len.max(1) as u32,
    }
}

/// Characters of the quoted scalar that `rest` starts with, quotes included: to the closing
/// quote `q` (skipping `\x` escapes in double quotes and `''` in single quotes), or to the
/// end of the line when it continues on the next.
fn quoted_len(rest: &str, q: char) -> usize {
    let mut chars = rest.chars().skip(1).peekable();
    let mut i = 1;
    while let Some(c) = chars.next() {
        if q == '"' && c == '\\' {
            chars.next();
            i += 2;
            continue;
        }
        if c == q {
            if q == '\'' && chars.peek() == Some(&'\'') {
                chars.next();
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    rest.chars().count()
}

/// The span of the `!tag` written before the node starting at `p` on the same line.
fn tag_span(lines: &Lines<'_>, p: Pos) -> Span {
    let Some(line) = lines.line(p.line) else {
        return Span::point(p);
    };
    let before: Vec<char> = line.chars().take(p.col as usize - 1).collect();
    let Some(bang) = before.iter().rposition(|c| *c == '!') else {
        return Span::point(p);
    };
    // Back to the first `!` of the token (`!!binary`), forward to its end.
    let start = before[..=bang]
        .iter()
        .rposition(|c| c.is_whitespace())
        .map_or(0, |i| i + 1);
    let len = before[start..]
        .iter()
        .position(|c| c.is_whitespace())
        .unwrap_or(before.len() - start);
    Span {
        start: Pos {
            line: p.line,
            col: start as u32 + 1,
        },
        len: len.max(1) as u32,
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        span: Span,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        /// The key waiting for its value, and whether it repeats an earlier key (then it
        /// was reported, and the entry is dropped to keep the first definition).
        key: Option<(Node, bool)>,
        span: Option<Span>,
        anchor: usize,
        /// Where each key was first defined.
        seen: HashMap<String, Pos>,
    },
}

struct Builder<'a> {
    file: &'a str,
    lines: &'a Lines<'a>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    root: Option<Node>,
    diagnostics: Vec<Diagnostic>,
    /// A block mapping went over [`MAX_DEPTH`]; its start marker is imprecise, so the
    /// error is reported at the next event (its first key).
    too_deep: bool,
}

impl Builder<'_> {
    fn error(&self, code: Code, span: Span, message: String, help: &str) -> Diagnostic {
        Diagnostic::error(code, self.file, span, message).with_help(help)
    }

    /// Attach a finished node to its parent (or make it the root).
    fn push(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                key,
                span,
                seen,
                ..
            }) => match key.take() {
                None => {
                    if span.is_none() {
                        *span = Some(node.span);
                    }
                    let key_text = match &node.value {
                        Value::Scalar(s) => Some(s.text.clone()),
                        _ => None,
                    };
                    match key_text {
                        None => {
                            let d = Diagnostic::error(
                                Code::UnsupportedYaml,
                                self.file,
                                node.span,
                                format!("a mapping key must be a plain name, found {}", node.describe()),
                            )
                            .with_help("write keys as names, e.g. `zones:`; complex keys (`? [a, b]`) are not used in fleet files");
                            self.diagnostics.push(d);
                            // Keep a placeholder so the value that follows pairs up.
                            *key = Some((node, false));
                        }
                        Some(text) => {
                            let duplicate = seen.get(&text);
                            if let Some(first) = duplicate {
                                let d = Diagnostic::error(
                                    Code::DuplicateKey,
                                    self.file,
                                    node.span,
                                    format!("duplicate key `{text}` (first defined at line {}, column {})", first.line, first.col),
                                )
                                .with_help("a key may appear once in a mapping: remove one of the two, or merge their contents");
                                self.diagnostics.push(d);
                            }
                            let duplicate = duplicate.is_some();
                            if !duplicate {
                                seen.insert(text, node.span.start);
                            }
                            *key = Some((node, duplicate));
                        }
                    }
                }
                Some((k, duplicate)) => {
                    if !duplicate {
                        entries.push((k, node));
                    }
                }
            },
        }
    }

    fn count(&mut self, n: usize, span: Span) -> Result<(), Diagnostic> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(self.error(
                Code::AliasBomb,
                span,
                format!("document expands to more than {MAX_NODES} nodes (aliases included)"),
                "fleet files are small: this looks like an alias bomb; write the values out instead of nesting aliases",
            ));
        }
        Ok(())
    }

    fn record_anchor(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }

    fn on_event(&mut self, ev: Event, m: &Marker) -> Result<(), Diagnostic> {
        let p = pos(m);
        let is_seq = matches!(ev, Event::SequenceStart(..));
        if self.too_deep {
            return Err(self.error(
                Code::TooDeep,
                Span::point(p),
                format!("nesting deeper than {MAX_DEPTH} levels"),
                "fleet files nest at most 4 levels; this file is not a fleet file or is corrupted",
            ));
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let span = scalar_span(self.lines, p, style, &text);
                self.count(1, span)?;
                let mut plain = style == TScalarStyle::Plain;
                if let Some(tag) = tag {
                    let is_str = tag.suffix == "str"
                        && (tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:");
                    if !is_str {
                        let handle = if tag.handle == "tag:yaml.org,2002:" {
                            "!!"
                        } else {
                            tag.handle.as_str()
                        };
                        return Err(self.error(
                            Code::UnsupportedYaml,
                            tag_span(self.lines, p),
                            format!("YAML tag `{handle}{}` is not supported", tag.suffix),
                            "remove the tag; to force a string, quote the value instead",
                        ));
                    }
                    plain = false;
                }
                let node = Node {
                    value: Value::Scalar(Scalar { text, plain }),
                    span,
                };
                self.record_anchor(anchor, &node);
                self.push(node);
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                let span = Span::point(p);
                if let Some(tag) = tag {
                    return Err(self.error(
                        Code::UnsupportedYaml,
                        span,
                        format!("YAML tag `{}{}` is not supported", tag.handle, tag.suffix),
                        "remove the tag",
                    ));
                }
                if self.stack.len() >= MAX_DEPTH && !is_seq {
                    self.too_deep = true;
                    return Ok(());
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(self.error(
                        Code::TooDeep,
                        span,
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                        "fleet files nest at most 4 levels; this file is not a fleet file or is corrupted",
                    ));
                }
                self.count(1, span)?;
                self.stack.push(if is_seq {
                    Frame::Seq {
                        items: Vec::new(),
                        span,
                        anchor,
                    }
                } else {
                    Frame::Map {
                        entries: Vec::new(),
                        key: None,
                        span: None,
                        anchor,
                        seen: HashMap::new(),
                    }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        span,
                        anchor,
                    }) => (
                        Node {
                            value: Value::Seq(items),
                            span,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        entries,
                        span,
                        anchor,
                        ..
                    }) => (
                        Node {
                            value: Value::Map(entries),
                            span: span.unwrap_or(Span::point(p)),
                        },
                        anchor,
                    ),
                    None => return Ok(()),
                };
                self.record_anchor(anchor, &node);
                self.push(node);
            }
            Event::Alias(id) => {
                let span = Span::point(p);
                let Some(target) = self.anchors.get(&id) else {
                    return Err(self.error(
                        Code::Syntax,
                        span,
                        "alias refers to an unknown anchor".into(),
                        "define the anchor (`&name`) before using it (`*name`)",
                    ));
                };
                let size = target.size();
                let mut node = target.clone();
                self.count(size, span)?;
                node.span = span;
                self.push(node);
            }
            Event::DocumentStart => {
                if self.root.is_some() {
                    return Err(self.error(
                        Code::MultipleDocuments,
                        Span::point(p),
                        "a second YAML document (`---`) in one file".into(),
                        "a fleet file holds exactly one document: remove the second `---` and what follows, or move it to its own file",
                    ));
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }
}

/// Parse `text` (already known to be UTF-8) from file `file` into a located tree.
pub fn parse(file: &str, text: &str) -> Parsed {
    let lines = Lines::new(text);
    let mut b = Builder {
        file,
        lines: &lines,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
        diagnostics: Vec::new(),
        too_deep: false,
    };
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((ev, m)) => {
                if let Err(d) = b.on_event(ev, &m) {
                    b.diagnostics.push(d);
                    return Parsed {
                        root: None,
                        diagnostics: b.diagnostics,
                    };
                }
            }
            Err(e) => {
                let p = pos(e.marker());
                // The scanner reports a tab where it gave up, which can be the line before
                // the tab (a plain scalar continues onto the next line): find the tab.
                let tab_at = (p.line..p.line + 3).find_map(|n| {
                    let l = lines.line(n)?;
                    let indent: &str = &l[..l.len() - l.trim_start_matches([' ', '\t']).len()];
                    indent.find('\t').map(|i| Pos {
                        line: n,
                        col: i as u32 + 1,
                    })
                });
                let d = if e.info().contains("recursion limit") {
                    Diagnostic::error(
                        Code::TooDeep,
                        file,
                        Span::point(p),
                        format!("nesting deeper than the parser's limit ({})", e.info()),
                    )
                    .with_help("fleet files nest at most 4 levels; this file is not a fleet file or is corrupted")
                } else if let Some(at) = tab_at.filter(|_| e.info().contains("tab")) {
                    Diagnostic::error(
                        Code::Tab,
                        file,
                        Span::point(at),
                        "tab character used for indentation".into(),
                    )
                    .with_help("YAML indents with spaces only: replace the tab with spaces (2 per level is usual)")
                } else {
                    // Name the innermost bracket still open, if any: the usual culprit.
                    let open = b.stack.iter().rev().find_map(|f| {
                        let span = match f {
                            Frame::Seq { span, .. } => Some(*span),
                            Frame::Map { .. } => None,
                        }?;
                        let c = lines
                            .line(span.start.line)?
                            .chars()
                            .nth(span.start.col as usize - 1)?;
                        (c == '[').then_some(span.start)
                    });
                    let help = match open {
                        Some(o) => format!(
                            "the `[` opened at line {}, column {} is not closed with `]`, or an item in it is malformed",
                            o.line, o.col
                        ),
                        None => "check indentation, colons after keys, and that quotes and brackets are closed".to_string(),
                    };
                    Diagnostic::error(
                        Code::Syntax,
                        file,
                        Span::point(p),
                        format!("YAML syntax error: {}", e.info()),
                    )
                    .with_help(help)
                };
                b.diagnostics.push(d);
                return Parsed {
                    root: None,
                    diagnostics: b.diagnostics,
                };
            }
        }
    }
    Parsed {
        root: b.root,
        diagnostics: b.diagnostics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(src: &str) -> Node {
        let p = parse("t.yaml", src);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        p.root.unwrap()
    }

    #[test]
    fn positions_are_one_based_and_span_the_token() {
        let r = root("a: 1\nbé: \"x\\\"y\" # c\n");
        let Value::Map(e) = r.value else { panic!() };
        assert_eq!(
            e[1].0.span,
            Span {
                start: Pos { line: 2, col: 1 },
                len: 2
            }
        );
        assert_eq!(
            e[1].1.span,
            Span {
                start: Pos { line: 2, col: 5 },
                len: 6
            }
        );
        assert_eq!(
            e[0].1.span,
            Span {
                start: Pos { line: 1, col: 4 },
                len: 1
            }
        );
    }

    #[test]
    fn core_schema_typing() {
        let s = |t: &str| {
            Scalar {
                text: t.into(),
                plain: true,
            }
            .kind()
        };
        assert_eq!(s("22.0"), ScalarKind::Float);
        assert_eq!(s("0.20.0"), ScalarKind::Str);
        assert_eq!(s("5000"), ScalarKind::Int);
        assert_eq!(s("0x1F"), ScalarKind::Int);
        assert_eq!(s("1e3"), ScalarKind::Float);
        assert_eq!(s("yes"), ScalarKind::Str, "YAML 1.2: yes is a string");
        assert_eq!(s("~"), ScalarKind::Null);
        assert_eq!(s("."), ScalarKind::Str);
        assert_eq!(
            Scalar {
                text: "5000".into(),
                plain: false
            }
            .kind(),
            ScalarKind::Str
        );
    }

    #[test]
    fn duplicate_keys_are_reported_and_parsing_goes_on() {
        let p = parse("t.yaml", "a: 1\nb: 2\na: 3\nc: [x, x]\n");
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(p.diagnostics[0].code, Code::DuplicateKey);
        assert_eq!(p.diagnostics[0].span.start, Pos { line: 3, col: 1 });
        let Value::Map(e) = p.root.unwrap().value else {
            panic!()
        };
        assert_eq!(e.len(), 3, "first definition kept, duplicate dropped");
    }

    #[test]
    fn alias_bomb_is_cut_off() {
        let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            src.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let p = parse("t.yaml", &src);
        assert_eq!(p.diagnostics[0].code, Code::AliasBomb);
        assert!(p.root.is_none());
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let src = "[".repeat(100_000);
        let p = parse("t.yaml", &src);
        assert_eq!(p.diagnostics[0].code, Code::TooDeep);
    }

    #[test]
    fn scalar_spans_cover_quotes_escapes_and_wide_characters() {
        let r = root(concat!(
            "a: 'it''s' # c\n",
            "b: \"x\\\\\" # c\n",
            "é: \"ü\\\"\"\n",
            "c: 'two\n  lines'\n",
            "d: plain é text # c\n",
            "e: \"\"\n",
        ));
        let Value::Map(e) = r.value else { panic!() };
        let spans: Vec<(u32, u32, u32)> = e
            .iter()
            .map(|(_, v)| (v.span.start.line, v.span.start.col, v.span.len))
            .collect();
        assert_eq!(
            spans,
            [
                (1, 4, 7),
                (2, 4, 5),
                (3, 4, 5),
                (4, 4, 4),
                (6, 4, 12),
                (7, 4, 2)
            ]
        );
        let Value::Scalar(s) = &e[1].1.value else {
            panic!()
        };
        assert_eq!(s.text, "x\\");
    }

    #[test]
    fn small_aliases_are_fine() {
        let r = root("a: &p [1, 2]\nb: *p\n");
        let Value::Map(e) = r.value else { panic!() };
        assert_eq!(e[0].1.value, e[1].1.value);
    }
}
