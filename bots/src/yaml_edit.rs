//! Changing one scalar of a YAML file and nothing else.
//!
//! A bump pull request must be reviewable at a glance: its diff is the `version:` line (and
//! the `image.digest` line when the digest is known), with every comment, key order, blank
//! line and quoting choice of the file kept byte for byte. A YAML library that parses and
//! re-emits the document cannot promise that, so this module finds the value's token in
//! the original text (through the located tree of `fleet-repo-schema`), replaces exactly
//! those bytes, and then proves the result: the edited text is parsed again and must be the
//! original document with only the edited values changed.
//!
//! The replacement keeps the token's quoting style: `"…"` stays double-quoted, `'…'` single-
//! quoted, and a plain scalar stays plain unless the new value would then read as something
//! other than a string (`22.0` is a number in YAML), in which case it is double-quoted.

use fleet_repo_schema::yaml::{self, Node, Scalar, ScalarKind, Value};

/// One value to set: a path of mapping keys from the document's root, and the new text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// Keys from the root, e.g. `["image", "digest"]`.
    pub path: Vec<String>,
    /// The new value (a string, or the digits of a number).
    pub value: String,
    /// The value is a whole number, written plain where a plain number was (a size).
    pub number: bool,
}

impl Edit {
    /// An edit of `path` (dotted, e.g. `image.digest`) to the string `value`.
    pub fn new(path: &str, value: impl Into<String>) -> Edit {
        Edit {
            path: path.split('.').map(str::to_string).collect(),
            value: value.into(),
            number: false,
        }
    }

    /// An edit of `path`, a whole number written plain (`instance.data_volume_gb`), to `n`.
    pub fn number(path: &str, n: u64) -> Edit {
        Edit {
            number: true,
            ..Edit::new(path, n.to_string())
        }
    }

    /// The kind the edited value must read back as.
    fn kind(&self) -> ScalarKind {
        if self.number {
            ScalarKind::Int
        } else {
            ScalarKind::Str
        }
    }

    fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// Why a file could not be edited. The file is never half-changed: an error means no edit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The file does not parse.
    #[error("{file} does not parse as YAML ({message}); fix the file first")]
    Parse {
        /// File.
        file: String,
        /// The parser's first error.
        message: String,
    },
    /// The key is not in the file.
    #[error("{file} has no `{path}` to change")]
    Missing {
        /// File.
        file: String,
        /// Dotted path.
        path: String,
    },
    /// The value is not a single-line scalar this module can replace in place.
    #[error(
        "{file}:{line}: `{path}` is {what}; only a single-line scalar can be changed in place, edit this file by hand"
    )]
    Unsupported {
        /// File.
        file: String,
        /// Line.
        line: u32,
        /// Dotted path.
        path: String,
        /// What it is instead.
        what: String,
    },
    /// The new value holds characters that would need escaping.
    #[error(
        "the new value for `{path}` ({value:?}) holds characters that cannot be written unescaped"
    )]
    BadValue {
        /// Dotted path.
        path: String,
        /// The value.
        value: String,
    },
    /// The result did not verify (a bug: nothing is written).
    #[error(
        "{file}: the edited file does not read back as the original with only `{path}` changed; nothing was changed"
    )]
    Verify {
        /// File.
        file: String,
        /// Dotted path(s).
        path: String,
    },
}

/// `text` (the file `file`) with every edit applied, or why not.
pub fn set_scalars(file: &str, text: &str, edits: &[Edit]) -> Result<String, EditError> {
    let root = parse_root(file, text)?;
    let starts = line_starts(text);
    // (start, end, replacement) per edit.
    let mut cuts: Vec<(usize, usize, String)> = Vec::with_capacity(edits.len());
    for e in edits {
        if e.value.is_empty()
            || e.value
                .chars()
                .any(|c| c.is_control() || matches!(c, '"' | '\\' | '\''))
        {
            return Err(EditError::BadValue {
                path: e.dotted(),
                value: e.value.clone(),
            });
        }
        let node = find(&root, &e.path).ok_or_else(|| EditError::Missing {
            file: file.into(),
            path: e.dotted(),
        })?;
        let unsupported = |what: &str| EditError::Unsupported {
            file: file.into(),
            line: node.span.start.line,
            path: e.dotted(),
            what: what.into(),
        };
        let Value::Scalar(old) = &node.value else {
            return Err(unsupported(match node.value {
                Value::Seq(_) => "a list",
                _ => "a mapping",
            }));
        };
        let start = byte_offset(text, &starts, node.span.start.line, node.span.start.col)
            .ok_or_else(|| unsupported("at a position outside the file"))?;
        let (end, style) = token_end(text, start, old).ok_or_else(|| {
            unsupported("written over several lines, as a block scalar, or with an anchor or tag")
        })?;
        if e.number {
            // A number stays a plain number: quoted, or not one now, it is not this edit's.
            if style != Style::Plain || old.kind() != ScalarKind::Int {
                return Err(unsupported("not a plain whole number"));
            }
            cuts.push((start, end, e.value.clone()));
            continue;
        }
        cuts.push((start, end, style.render(&e.value)));
    }
    cuts.sort_by_key(|c| std::cmp::Reverse(c.0));
    if cuts.windows(2).any(|w| w[1].1 > w[0].0) {
        return Err(EditError::Verify {
            file: file.into(),
            path: paths(edits),
        });
    }
    let mut out = text.to_string();
    for (s, e, r) in &cuts {
        out.replace_range(*s..*e, r);
    }
    verify(file, &root, &out, edits)?;
    Ok(out)
}

/// The scalar at `path`, if the file has one there (for reading the current version).
pub fn get_scalar(file: &str, text: &str, path: &str) -> Result<Option<String>, EditError> {
    let root = parse_root(file, text)?;
    let keys: Vec<String> = path.split('.').map(str::to_string).collect();
    Ok(find(&root, &keys).and_then(|n| n.scalar().map(|s| s.text.clone())))
}

/// The dotted paths of `edits`, for messages.
fn paths(edits: &[Edit]) -> String {
    edits
        .iter()
        .map(Edit::dotted)
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_root(file: &str, text: &str) -> Result<Node, EditError> {
    let parsed = yaml::parse(file, text);
    match (parsed.root, parsed.diagnostics.first()) {
        (Some(r), None) => Ok(r),
        (_, Some(d)) => Err(EditError::Parse {
            file: file.into(),
            message: format!("line {}: {}", d.span.start.line, d.message),
        }),
        (None, None) => Err(EditError::Parse {
            file: file.into(),
            message: "the file holds no document".into(),
        }),
    }
}

fn find<'n>(node: &'n Node, path: &[String]) -> Option<&'n Node> {
    let Some((first, rest)) = path.split_first() else {
        return Some(node);
    };
    let Value::Map(entries) = &node.value else {
        return None;
    };
    let (_, v) = entries
        .iter()
        .find(|(k, _)| k.scalar().is_some_and(|s| s.text == *first))?;
    find(v, rest)
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// Byte offset of (line, column in characters), both from 1.
fn byte_offset(text: &str, starts: &[usize], line: u32, col: u32) -> Option<usize> {
    let ls = *starts.get(line.checked_sub(1)? as usize)?;
    let rest = text.get(ls..)?;
    let skip = col.checked_sub(1)? as usize;
    let line_end = rest.find('\n').unwrap_or(rest.len());
    rest[..line_end]
        .char_indices()
        .nth(skip)
        .map(|(i, _)| ls + i)
}

/// How a scalar token is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
}

impl Style {
    fn render(self, value: &str) -> String {
        match self {
            Style::Double => format!("\"{value}\""),
            Style::Single => format!("'{value}'"),
            Style::Plain => {
                let as_plain = Scalar {
                    text: value.to_string(),
                    plain: true,
                };
                // A plain value must still read as this string: `22.0` would be a number,
                // `true` a boolean; and it must not start like YAML syntax.
                let safe = as_plain.kind() == ScalarKind::Str
                    && value.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && !value.contains(": ")
                    && !value.contains(" #");
                if safe {
                    value.to_string()
                } else {
                    format!("\"{value}\"")
                }
            }
        }
    }
}

/// The end of the single-line scalar token starting at `start`, and its style. None when
/// the token is not a single-line plain or quoted scalar holding `old`'s text.
fn token_end(text: &str, start: usize, old: &Scalar) -> Option<(usize, Style)> {
    let rest = &text[start..];
    let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
    let line = line.strip_suffix('\r').unwrap_or(line);
    match line.chars().next()? {
        '"' => {
            let mut escaped = false;
            for (i, c) in line.char_indices().skip(1) {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => return Some((start + i + 1, Style::Double)),
                    _ => {}
                }
            }
            None
        }
        '\'' => {
            let b = line.as_bytes();
            let mut i = 1;
            while i < b.len() {
                if b[i] == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    return Some((start + i + 1, Style::Single));
                }
                i += 1;
            }
            None
        }
        '|' | '>' | '&' | '!' | '*' => None,
        _ => {
            // A single-line plain scalar is written exactly as its value.
            (old.plain && !old.text.is_empty() && line.starts_with(old.text.as_str()))
                .then(|| (start + old.text.len(), Style::Plain))
        }
    }
}

/// The edited text must parse to the original document with exactly the edited values
/// changed (as strings).
fn verify(file: &str, before: &Node, after_text: &str, edits: &[Edit]) -> Result<(), EditError> {
    let fail = || EditError::Verify {
        file: file.into(),
        path: paths(edits),
    };
    let after = parse_root(file, after_text).map_err(|_| fail())?;
    let mut expected = before.to_json();
    for e in edits {
        let mut at = &mut expected;
        for k in &e.path {
            at = at.get_mut(k).ok_or_else(fail)?;
        }
        *at = if e.number {
            serde_json::from_str(&e.value).map_err(|_| fail())?
        } else {
            serde_json::Value::String(e.value.clone())
        };
    }
    if after.to_json() != expected {
        return Err(fail());
    }
    for e in edits {
        let n = find(&after, &e.path).ok_or_else(fail)?;
        match n.scalar() {
            Some(s) if s.text == e.value && s.kind() == e.kind() => {}
            _ => return Err(fail()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_is_changed_as_a_plain_number_and_its_comment_kept() {
        let text = "instance:\n  type: m5.xlarge\n  data_volume_gb: 1000   # grows\n";
        let edit = [Edit::number("instance.data_volume_gb", 1250)];
        assert_eq!(
            set_scalars("c.yaml", text, &edit).unwrap(),
            "instance:\n  type: m5.xlarge\n  data_volume_gb: 1250   # grows\n"
        );
        // A quoted size is not a number this edit may write over.
        let quoted = "instance:\n  data_volume_gb: \"1000\"\n";
        assert!(matches!(
            set_scalars("c.yaml", quoted, &edit),
            Err(EditError::Unsupported { .. })
        ));
    }

    fn bump(text: &str, v: &str) -> String {
        set_scalars("coins/x.yaml", text, &[Edit::new("version", v)]).unwrap()
    }

    #[test]
    fn keeps_the_quoting_style() {
        assert_eq!(bump("version: \"28.1\"\n", "29.0"), "version: \"29.0\"\n");
        assert_eq!(bump("version: '28.1'\n", "29.0"), "version: '29.0'\n");
        assert_eq!(bump("version: 0.21.3\n", "0.21.4"), "version: 0.21.4\n");
        assert_eq!(
            bump("version: v1.14.11   # geth\n", "v1.14.12"),
            "version: v1.14.12   # geth\n"
        );
    }

    #[test]
    fn a_plain_value_that_would_read_as_a_number_is_quoted() {
        assert_eq!(bump("version: 0.21.3\n", "22.0"), "version: \"22.0\"\n");
        assert_eq!(bump("version: 0.21.3\n", "27"), "version: \"27\"\n");
        assert_eq!(bump("version: 1.0.0\n", "true"), "version: \"true\"\n");
        assert_eq!(bump("version: 1.0.0\n", "1e5"), "version: \"1e5\"\n");
    }

    #[test]
    fn flow_style_comments_and_crlf_survive() {
        let t = "# head\r\ncoin: x\r\n{version: \"1.0\"}\r\n";
        // Not a valid document (two roots), so it must refuse, never guess.
        assert!(set_scalars("f", t, &[Edit::new("version", "2.0")]).is_err());
        let t = "coin: x  # c\r\nimage: {repository: r, digest: 'sha256:aa'}\r\nversion: \"1.0\" # pinned\r\n";
        let out = set_scalars(
            "f",
            t,
            &[
                Edit::new("version", "1.1"),
                Edit::new("image.digest", "sha256:bb"),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "coin: x  # c\r\nimage: {repository: r, digest: 'sha256:bb'}\r\nversion: \"1.1\" # pinned\r\n"
        );
    }

    #[test]
    fn refuses_what_it_cannot_do_in_place() {
        let e = |t: &str| set_scalars("f", t, &[Edit::new("version", "2.0")]).unwrap_err();
        assert!(matches!(e("coin: x\n"), EditError::Missing { .. }));
        assert!(matches!(
            e("version: |\n  1.0\n"),
            EditError::Unsupported { .. }
        ));
        assert!(matches!(e("version: [1]\n"), EditError::Unsupported { .. }));
        assert!(matches!(
            e("version: \"1.0\n  x\"\n"),
            EditError::Unsupported { .. }
        ));
        // An anchored value is changed in place; one that is aliased elsewhere would change
        // the alias too, which the read-back catches.
        assert_eq!(bump("version: &v 1.0.0\n", "2.0.1"), "version: &v 2.0.1\n");
        assert!(matches!(
            e("version: &v \"1.0\"\nother: *v\n"),
            EditError::Verify { .. } | EditError::Unsupported { .. }
        ));
        assert!(matches!(
            e("version: 1.0\n  continued\n"),
            EditError::Unsupported { .. }
        ));
        assert!(matches!(e("version: [\n"), EditError::Parse { .. }));
        let bad = set_scalars("f", "version: a\n", &[Edit::new("version", "1\"; x")]);
        assert!(matches!(bad, Err(EditError::BadValue { .. })));
        let bad = set_scalars("f", "version: a\n", &[Edit::new("version", "1\n2")]);
        assert!(matches!(bad, Err(EditError::BadValue { .. })));
    }

    #[test]
    fn non_ascii_before_the_value_is_counted_in_characters() {
        let t = "é: ü\nversion: \"1.0\" # ✓\n";
        assert_eq!(bump(t, "2.0"), "é: ü\nversion: \"2.0\" # ✓\n");
        let t = "k: {é: 1, version: 1.0.1}\nversion: x\n";
        let out = set_scalars("f", t, &[Edit::new("k.version", "1.0.2")]).unwrap();
        assert_eq!(out, "k: {é: 1, version: 1.0.2}\nversion: x\n");
    }

    #[test]
    fn reads_a_scalar() {
        let t = "image:\n  digest: \"sha256:ab\"\nversion: 1.2.3\n";
        assert_eq!(
            get_scalar("f", t, "version").unwrap().as_deref(),
            Some("1.2.3")
        );
        assert_eq!(
            get_scalar("f", t, "image.digest").unwrap().as_deref(),
            Some("sha256:ab")
        );
        assert_eq!(get_scalar("f", t, "nope").unwrap(), None);
    }
}
