//! Errors in a pipeline file or in `--set` overrides, and the one renderer that shows them
//! with file:line:column and the offending line.

use std::fmt::Write as _;
use std::path::Path;

/// A position in the pipeline file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub message: String,
    pub location: Option<Location>,
    /// Length of the span to underline at `location`; 0 underlines the rest of the line.
    pub span: usize,
    pub help: Option<String>,
}

impl SpecError {
    pub fn new(message: impl Into<String>) -> Self {
        SpecError { message: message.into(), location: None, span: 1, help: None }
    }
    pub fn at(mut self, location: Option<Location>, span: usize) -> Self {
        self.location = location;
        self.span = span;
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// All the problems found in one pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} error(s) in pipeline {}", errors.len(), file)]
pub struct SpecErrors {
    pub file: String,
    pub source_text: String,
    pub errors: Vec<SpecError>,
}

impl SpecErrors {
    pub fn new(file: &Path, source_text: &str, errors: Vec<SpecError>) -> Self {
        SpecErrors { file: file.display().to_string(), source_text: source_text.to_string(), errors }
    }

    /// Renders every error like a compiler does:
    ///
    /// ```text
    /// error: unknown parameter `max_lenn` for step `encode` (kind `tokenize`)
    ///   --> pipelines/nsmc.yaml:14:5
    ///    |
    /// 14 |     max_lenn: 64
    ///    |     ^^^^^^^^
    ///    = help: did you mean `max_len`?
    /// ```
    pub fn render(&self) -> String {
        let lines: Vec<&str> = self.source_text.lines().collect();
        let mut out = String::new();
        for e in &self.errors {
            let _ = writeln!(out, "error: {}", e.message);
            match e.location {
                Some(loc) => {
                    let _ = writeln!(out, "  --> {}:{}:{}", self.file, loc.line, loc.column);
                    if let Some(text) = lines.get(loc.line.saturating_sub(1)) {
                        let gutter = loc.line.to_string().len();
                        let pad = " ".repeat(gutter);
                        let _ = writeln!(out, "{pad} |");
                        let _ = writeln!(out, "{} | {}", loc.line, text);
                        let start = loc.column.saturating_sub(1);
                        let rest = text.get(start..).unwrap_or("");
                        let rest = rest.split(" #").next().unwrap_or(rest).trim_end();
                        let span = if e.span == 0 { rest.chars().count() } else { e.span };
                        let marker = format!("{}{}", " ".repeat(start), "^".repeat(span.max(1)));
                        let _ = writeln!(out, "{pad} | {marker}");
                        if let Some(help) = &e.help {
                            let _ = writeln!(out, "{pad} = help: {help}");
                        }
                    } else if let Some(help) = &e.help {
                        let _ = writeln!(out, "   = help: {help}");
                    }
                }
                None => {
                    let _ = writeln!(out, "  --> {}", self.file);
                    if let Some(help) = &e.help {
                        let _ = writeln!(out, "   = help: {help}");
                    }
                }
            }
            out.push('\n');
        }
        let n = self.errors.len();
        let _ = writeln!(out, "{n} error{} in {}; nothing was run", if n == 1 { "" } else { "s" }, self.file);
        out
    }
}

pub use pipe_steps::suggest::did_you_mean;
