//! Diagnostics: what is wrong, where (file, line, column), and how to fix it.
//!
//! Every rule has a stable code (`E303`, `W100`). Codes are never reused or renumbered:
//! tools and runbooks may match on them. `fleet validate --explain CODE` prints the long
//! explanation kept here, and `fleet-repo-schema/ERRORS.md` lists them all (a test keeps
//! that file in step with this enum).

use serde::Serialize;
use std::fmt::{self, Write as _};

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters.
    pub col: u32,
}

/// Where a value is written: its start and its length on the start line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Span {
    /// First character.
    pub start: Pos,
    /// Length in characters on the start line, at least 1 (for the caret).
    pub len: u32,
}

impl Span {
    /// A span of one character at `p`.
    pub fn point(p: Pos) -> Span {
        Span { start: p, len: 1 }
    }
    /// The start of a file.
    pub const FILE_START: Span = Span {
        start: Pos { line: 1, col: 1 },
        len: 1,
    };
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The repository is invalid and is not applied.
    Error,
    /// Worth a look; the repository is still valid.
    Warning,
}

macro_rules! codes {
    ($( $variant:ident = $code:literal, $sev:ident, $title:literal, $explain:literal; )*) => {
        /// Every diagnostic fleet can report. The code string never changes meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $( #[doc = $title] $variant, )* }

        impl Code {
            /// Every code, in order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];
            /// The stable code, e.g. `E303`.
            pub fn as_str(self) -> &'static str { match self { $(Code::$variant => $code,)* } }
            /// A one-line title.
            pub fn title(self) -> &'static str { match self { $(Code::$variant => $title,)* } }
            /// The long explanation printed by `fleet validate --explain`.
            pub fn explanation(self) -> &'static str { match self { $(Code::$variant => $explain,)* } }
            /// Errors make a repository invalid; warnings do not.
            pub fn severity(self) -> Severity { match self { $(Code::$variant => Severity::$sev,)* } }
            /// Look a code up by its string (case-insensitive).
            pub fn parse(s: &str) -> Option<Code> {
                let s = s.trim().to_ascii_uppercase();
                Code::ALL.iter().copied().find(|c| c.as_str() == s)
            }
        }
    };
}

codes! {
    Io = "E001", Error, "a file of the repository could not be read",
        "An I/O error (permissions, a vanished file) stopped fleet from reading a file. Nothing about the content is known. Check the file's permissions and that the path is a directory holding fleet.yaml.";
    Syntax = "E100", Error, "YAML syntax error",
        "The file is not well-formed YAML. The position is where the parser gave up; the mistake is often just before it: a missing colon, an unclosed quote or bracket, or wrong indentation.";
    Tab = "E101", Error, "tab used for indentation",
        "YAML forbids tabs in indentation. Replace them with spaces. Most editors can show whitespace and convert tabs.";
    DuplicateKey = "E102", Error, "duplicate key in a mapping",
        "The same key appears twice in one mapping. YAML says that is an error; many tools silently keep the last one, which hides mistakes. Keep one.";
    FileTooLarge = "E103", Error, "file too large",
        "Fleet files are a few kilobytes. A file over the limit (1 MiB) is refused without being parsed; it is probably not meant to be there.";
    NotUtf8 = "E104", Error, "file is not UTF-8",
        "YAML files must be UTF-8. Re-save the file as UTF-8. The position is the first invalid byte.";
    Binary = "E105", Error, "binary file where YAML was expected",
        "The file contains NUL bytes: it is binary, not YAML. Move it out of coins/ or replace it with the intended YAML.";
    TooDeep = "E106", Error, "nesting too deep",
        "Sequences and mappings nest deeper than 32 levels. Fleet files need at most 4; deeper input is refused before it is built.";
    AliasBomb = "E107", Error, "aliases expand too far",
        "The document, with its aliases (`*name`) expanded, has more than 20,000 nodes. This is the shape of a \"billion laughs\" attack. Write values out, or use fewer nested aliases.";
    SymlinkOutside = "E108", Error, "symbolic link leaves the repository, or not a regular file",
        "A fleet file is a symbolic link that points outside the repository, or is not a regular file (a FIFO, a device, a git submodule). fleet reads only regular files the repository itself holds, so that what is reviewed in a pull request is what is applied. Replace the link or the special file with a regular file.";
    EmptyDocument = "E109", Error, "file holds no YAML document",
        "The file is empty or holds only comments. A coin file must at least name its coin; fleet.yaml must hold the fleet-wide settings. Delete the file or fill it in.";
    MissingFleetFile = "E110", Error, "fleet.yaml is missing",
        "The repository root must hold exactly one fleet.yaml with the fleet-wide settings (region, network, DNS). Check that the path points at the root of the fleet repository.";
    MultipleDocuments = "E111", Error, "more than one YAML document in a file",
        "A fleet file holds exactly one YAML document. A second `---` starts another document; remove it or move the content to its own file.";
    UnsupportedYaml = "E112", Error, "YAML feature not used in fleet files",
        "Tags (`!!binary`, `!custom`), merge keys (`<<`) and non-scalar keys are not part of the fleet format. Write plain keys and values.";
    NoCoins = "E113", Error, "the repository has no coins",
        "coins/ holds no coin file. A fleet repository without coins is refused rather than applied: applied, it would ask to retire every node of the fleet, and the usual cause is a coins/ directory renamed or deleted by mistake (`git mv coins Coins`). Put the coin files back in coins/<coin>.yaml. To retire coins on purpose, delete their files and list them in fleet.yaml `retire:`.";
    TooManyCoins = "E114", Error, "more coin files than supported",
        "coins/ holds more than 5,000 coin files. fleet refuses the repository rather than read part of it.";
    UnsignedCommit = "E115", Error, "commit not signed by an allowed key",
        "The reconciler is configured with `repo.verify.allowed_signers` and the commit at the head of the branch has no good SSH signature by one of its keys: it is unsigned, signed with OpenPGP, by another key, or changed after it was signed. It is not applied; the last good revision stays in force. Sign with a listed key (`git config gpg.format ssh`, `git config user.signingkey ~/.ssh/id_ed25519.pub`, `git commit -S`), or add the signer's key to the file.";
    UnknownField = "E200", Error, "unknown field",
        "The key is not part of the fleet format at this place. It may be misspelt (see the suggestion), belong to another section, or be meant for a newer fleet. Unknown keys are errors rather than ignored, so a typo never silently disables a setting.";
    MissingField = "E201", Error, "missing required field",
        "A required key is absent. The message names it and what it holds.";
    WrongType = "E202", Error, "value of the wrong type",
        "The value has the wrong YAML type, e.g. a list where a number is expected. Note that YAML reads unquoted `22.0` as a number and `5000` as an integer: quote them where a string is expected.";
    InvalidEnum = "E203", Error, "value not among the allowed ones",
        "The field accepts only a fixed set of values, listed in the message.";
    CoinName = "E300", Error, "invalid coin name",
        "A coin name is 1-32 characters of a-z, 0-9 and '-', not starting or ending with '-'. It becomes a DNS label (node1.<coin>.<domain>), a file name, a tag value and part of a container name.";
    CoinFileMismatch = "E301", Error, "`coin` does not match the file name",
        "coins/<coin>.yaml must declare `coin: <coin>`. Rename the file or fix the field.";
    DuplicateCoin = "E302", Error, "coin defined twice",
        "Two files under coins/ declare the same coin (e.g. bitcoin.yaml and bitcoin.yml). Keep one.";
    Version = "E303", Error, "invalid version",
        "A version is 1-64 characters matching ^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$. It becomes the image tag and the argument of `systemctl start node@<version>` on every node, so nothing else may pass: no spaces, slashes, quotes, `;`, `$` or shell syntax.";
    Digest = "E304", Error, "malformed image digest",
        "An image digest is `sha256:` followed by 64 lowercase hex digits, as printed by `docker buildx imagetools inspect` or ECR.";
    ZoneNotInRegion = "E305", Error, "availability zone not in the fleet's region",
        "Every zone must belong to fleet.yaml's `region` (e.g. eu-central-1a in eu-central-1).";
    ZoneWithoutSubnet = "E306", Error, "availability zone has no subnet",
        "A coin may only be placed in a zone that fleet.yaml's network.subnets maps to a subnet. Add the subnet or pick another zone.";
    DuplicateZone = "E307", Error, "availability zone listed twice",
        "placement.zones is an ordered list of distinct zones (the rollout order). Use nodes_per_zone for more nodes in one zone.";
    NodesPerZone = "E308", Error, "nodes_per_zone below 1",
        "placement.nodes_per_zone must be at least 1. To retire a coin, delete its file (retiring needs approval and snapshots the data volumes).";
    PortRange = "E309", Error, "port outside 1..65535",
        "Ports are TCP port numbers between 1 and 65535.";
    DuplicatePort = "E310", Error, "port used twice",
        "A port appears twice among the coin's rpc and p2p ports. Each port maps one container port; list it once.";
    RpcPort = "E311", Error, "health check port is not an rpc port",
        "health.rpc_port must be one of ports.rpc (health probes talk to the node's RPC interface, which is internal only). A probe other than `none` needs at least one rpc port.";
    Duration = "E312", Error, "unparsable duration",
        "Durations are a number and a unit, optionally repeated: 30s, 10m, 12h, 2d, 1w, 1h30m.";
    TagPattern = "E313", Error, "tag_pattern is not a valid regular expression",
        "upstream.tag_pattern is a Rust `regex` pattern. Quote it with single quotes in YAML so backslashes stay as written.";
    TagPatternGroup = "E314", Error, "tag_pattern has no `version` group",
        "upstream.tag_pattern must capture the version in a group named `version`, e.g. '^v(?P<version>\\d+\\.\\d+(?:\\.\\d+)?)$'.";
    MaxUnavailable = "E315", Error, "max_unavailable below 1",
        "rollout.max_unavailable is how many of a coin's nodes may be down at once during a rollout; it must be at least 1, or nothing could ever be upgraded.";
    SlackUserId = "E316", Error, "not a Slack user id",
        "approvers are Slack user ids (U or W followed by uppercase letters and digits, e.g. U012ABCDEF), not names or e-mail addresses: names can be changed by their owner, ids cannot. Find an id in the user's Slack profile, \"Copy member ID\".";
    NoApprovers = "E317", Error, "approvals needed but nobody may approve",
        "The coin's rollout.approval asks for approvals, but fleet.yaml lists no approvers: every such rollout would wait forever. Add approvers or set approval: none.";
    ReservedEnv = "E318", Error, "reserved host_config key",
        "IMAGE, COIN, PORTS, RPC_PORTS, P2P_PORTS and NODE_NAME in the node's /etc/sysconfig/node are written by fleet from the coin's image, name and ports and the node's DNS name. Set those fields instead.";
    Identifier = "E319", Error, "malformed identifier",
        "The value does not have the form of what it names (an AWS id such as vpc-…/subnet-…/sg-…/ami-…, a region, a DNS name, an instance type, a GitHub owner/repo, an environment variable name…). The message gives the expected form.";
    EnvValue = "E320", Error, "invalid environment value",
        "Values of host_config and container_config are written to env files read by systemd and docker. They must be single-line text without control characters; a line break would inject another variable.";
    MetricsScript = "E321", Error, "custom metrics script is missing or outside the repository",
        "custom_metrics maps a metric name to a script path relative to the repository root, without `..`. The script must exist in the repository and be UTF-8 text of at most 4 KiB: fleet installs it on every node of the coin, through the node's user data.";
    ReservedTag = "E322", Error, "reserved tag key",
        "Tag keys starting with `fleet:` record fleet's ownership of resources, and `aws:` is reserved by AWS. Pick another key.";
    OutOfRange = "E323", Error, "number out of range",
        "The number is outside the range the field allows; the message says which.";
    HttpProbe = "E324", Error, "http probe settings missing or misplaced",
        "health.probe: http needs health.http with `path` and `height_pointer` (a JSON pointer to the block height in the response); health.http is only used with probe: http.";
    TooManyTags = "E325", Error, "more tags than AWS allows on a resource",
        "AWS allows 50 tags per resource, and fleet writes up to 10 of its own on every node (Name and the fleet: tags), so a coin may set at most 40. Over the limit, launching the node would fail; the repository is refused instead.";
    RestoreWithoutSnapshot = "E326", Error, "a rollback that restores needs before-upgrade snapshots",
        "`rollout.on_failure: restore` rolls a failed node back onto the snapshot of its data volume taken just before its upgrade; with `snapshots.before_upgrade: false` there is none. Turn the snapshots on, or use `on_failure: rollback` (the old version on the new data).";
    NotCoinFile = "W101", Warning, "a file under coins/ is not read",
        "Only coins/<coin>.yaml (or .yml) files are coin files. A sub-directory, a file with another extension or an upper-case one (`BITCOIN.YAML`) is not read, which may mean a coin you meant to define is missing. Rename or move the file; files starting with `.` are not reported.";
    Credential = "W100", Warning, "looks like a credential in clear text",
        "A value looks like a password, token or key committed to the repository. Anyone who can read the fleet repo can read it. Move it to the coin's AWS Secrets Manager secret (`secrets:`), whose keys become container environment variables. The value itself is never printed.";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One finding about one place in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The stable code.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// Path of the file relative to the repository root, with `/` separators.
    pub file: String,
    /// Where in the file.
    #[serde(flatten)]
    pub span: Span,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Do not show the source line: it holds a secret.
    #[serde(skip)]
    pub redact_source: bool,
}

impl Diagnostic {
    /// A diagnostic with the code's own severity.
    pub fn error(code: Code, file: &str, span: Span, message: String) -> Diagnostic {
        Diagnostic {
            code,
            severity: code.severity(),
            file: file.to_string(),
            span,
            message,
            help: None,
            redact_source: false,
        }
    }

    /// Add the "how to fix it" text.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        let help = help.into();
        if !help.is_empty() {
            self.help = Some(help);
        }
        self
    }

    /// `file:line:col`.
    pub fn location(&self) -> String {
        format!(
            "{}:{}:{}",
            self.file, self.span.start.line, self.span.start.col
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}: {sev}[{}]: {}",
            self.location(),
            self.code,
            self.message
        )
    }
}

/// Styles for [`render_human`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    /// Plain text.
    Never,
    /// ANSI colors.
    Always,
}

/// Render like a compiler: `path:line:col: error[E…]: message`, the source line, a caret
/// under the offending value, and the help. `source` is the file's text when available.
pub fn render_human(d: &Diagnostic, source: Option<&str>, color: Color) -> String {
    let (bold, red, yellow, blue, cyan, reset) = match color {
        Color::Always => (
            "\x1b[1m",
            "\x1b[1;31m",
            "\x1b[1;33m",
            "\x1b[1;34m",
            "\x1b[36m",
            "\x1b[0m",
        ),
        Color::Never => ("", "", "", "", "", ""),
    };
    let (sev, sev_color) = match d.severity {
        Severity::Error => ("error", red),
        Severity::Warning => ("warning", yellow),
    };
    // Everything below may hold the repository's own text (file names, key names in field
    // paths, values): none of it reaches the terminal raw.
    let mut out = format!(
        "{bold}{}{reset}: {sev_color}{sev}[{}]{reset}{bold}: {}{reset}\n",
        terminal_safe(&d.location()),
        d.code,
        terminal_safe(&d.message)
    );
    let line_no = d.span.start.line;
    let gutter = line_no.to_string().len();
    let line = source.and_then(|s| crate::yaml::Lines::new(s).line(line_no));
    if let Some(line) = line {
        let shown: String = if d.redact_source {
            // Keep the key, hide the value: `KEY: <redacted>`.
            match line.find(':') {
                Some(i) => format!("{} <redacted>", terminal_safe(&line[..=i])),
                None => "<redacted>".to_string(),
            }
        } else {
            String::new()
        };
        let _ = writeln!(out, "{blue}{:>gutter$} |{reset}", "");
        if d.redact_source {
            let _ = writeln!(out, "{blue}{line_no:>gutter$} |{reset} {shown}");
        } else {
            let col = d.span.start.col.saturating_sub(1) as usize;
            let (shown, pad, carets) = source_window(line, col, d.span.len.max(1) as usize);
            let _ = writeln!(out, "{blue}{line_no:>gutter$} |{reset} {shown}");
            let _ = writeln!(
                out,
                "{blue}{:>gutter$} |{reset} {pad}{sev_color}{carets}{reset}",
                ""
            );
        }
    }
    if let Some(help) = &d.help {
        let _ = writeln!(
            out,
            "{blue}{:>gutter$} = {reset}{cyan}help{reset}: {}",
            "",
            terminal_safe(help)
        );
    }
    out
}

/// Characters that change what a terminal shows rather than show themselves: control
/// characters (ESC starts colour, cursor and OSC sequences) and the Unicode format characters
/// that reorder or hide text (bidirectional overrides such as U+202E, zero-width ones).
fn is_unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
}

/// `s` with every character a terminal would act on written as its escape (`\u{1b}`).
pub fn terminal_safe(s: &str) -> String {
    if !s.chars().any(is_unsafe_char) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if is_unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Longest source line shown whole; a longer one is cut around the caret.
const MAX_SHOWN_LINE: usize = 160;

/// The part of `line` to show (unsafe characters replaced by U+FFFD, one for one so the caret
/// still lines up), the padding before the caret and the carets, for a span at character
/// `col` (0-based) of `len` characters. A line longer than [`MAX_SHOWN_LINE`] is cut to a
/// window around the span, with `…` where it was cut.
fn source_window(line: &str, col: usize, len: usize) -> (String, String, String) {
    let chars: Vec<char> = line
        .chars()
        .map(|c| if is_unsafe_char(c) { '\u{FFFD}' } else { c })
        .collect();
    let (start, end) = if chars.len() <= MAX_SHOWN_LINE {
        (0, chars.len())
    } else {
        let before = MAX_SHOWN_LINE / 3;
        let start = col.saturating_sub(before).min(chars.len());
        (start, (start + MAX_SHOWN_LINE).min(chars.len()))
    };
    let mut shown: String = chars[start..end].iter().collect();
    let mut pad: String = chars[start..col.clamp(start, end)]
        .iter()
        // Tabs before the caret are kept so the caret lines up in a terminal.
        .map(|c| if *c == '\t' { '\t' } else { ' ' })
        .collect();
    if start > 0 {
        shown.insert(0, '…');
        pad.insert(0, ' ');
    }
    if end < chars.len() {
        shown.push('…');
    }
    let carets = "^".repeat(len.min(end.saturating_sub(col).max(1)));
    (shown, pad, carets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hardening: key names (in field paths), file names and help reach the terminal with
    /// their escape, bidi and zero-width characters written out, never raw.
    #[test]
    fn terminal_escapes_in_user_text_are_written_out() {
        let d = Diagnostic::error(
            Code::UnknownField,
            "coins/x\u{1b}]8;;http://evil\u{7}.yaml",
            Span::point(Pos { line: 1, col: 1 }),
            "unknown field `evil\u{1b}[2J\u{202e}gnp`".into(),
        )
        .with_help("did you mean `a\u{200b}b`?");
        let src = "evil\u{1b}[2J\u{202e}: 1\n";
        let out = render_human(&d, Some(src), Color::Never);
        for bad in ['\u{1b}', '\u{202e}', '\u{200b}', '\u{7}'] {
            assert!(!out.contains(bad), "{bad:?} reached the terminal: {out:?}");
        }
        assert!(out.contains("\\u{1b}[2J\\u{202e}gnp"), "{out}");
    }

    /// Hardening: a 1 MB single-line file is not echoed whole under its error: the line is cut
    /// around the caret, which still points at the column.
    #[test]
    fn long_source_lines_are_cut_around_the_caret() {
        let line = format!("{}BAD{}", "a".repeat(500_000), "b".repeat(500_000));
        let d = Diagnostic::error(
            Code::Syntax,
            "coins/x.yaml",
            Span {
                start: Pos {
                    line: 1,
                    col: 500_001,
                },
                len: 3,
            },
            "here".into(),
        );
        let out = render_human(&d, Some(&line), Color::Never);
        assert!(out.len() < 1_000, "{} bytes", out.len());
        let lines: Vec<&str> = out.lines().collect();
        let src = lines.iter().find(|l| l.contains("BAD")).unwrap();
        let caret = lines.iter().find(|l| l.contains("^^^")).unwrap();
        assert_eq!(
            src.chars().position(|c| c == 'B'),
            caret.chars().position(|c| c == '^'),
            "{out}"
        );
        assert!(src.contains('…'));
    }

    #[test]
    fn codes_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {}", c.as_str());
            assert_eq!(Code::parse(&c.as_str().to_lowercase()), Some(*c));
            let prefix = if c.severity() == Severity::Error {
                'E'
            } else {
                'W'
            };
            assert!(c.as_str().starts_with(prefix));
        }
    }

    #[test]
    fn renders_like_a_compiler() {
        let d = Diagnostic::error(
            Code::Version,
            "coins/bitcoin.yaml",
            Span {
                start: Pos { line: 2, col: 10 },
                len: 5,
            },
            "bad".into(),
        )
        .with_help("fix it");
        let out = render_human(&d, Some("coin: bitcoin\nversion: 1 ;rm\n"), Color::Never);
        assert_eq!(
            out,
            "coins/bitcoin.yaml:2:10: error[E303]: bad\n  |\n2 | version: 1 ;rm\n  |          ^^^^^\n  = help: fix it\n"
        );
    }

    #[test]
    fn redacted_source_hides_the_value() {
        let mut d = Diagnostic::error(
            Code::Credential,
            "coins/x.yaml",
            Span {
                start: Pos { line: 1, col: 16 },
                len: 6,
            },
            "m".into(),
        );
        d.redact_source = true;
        let out = render_human(&d, Some("  RPC_PASSWORD: hunter2\n"), Color::Never);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("RPC_PASSWORD: <redacted>"));
    }
}
