//! The placeholders of a command's `run:` text: `{inputs.NAME}`, `{outputs.NAME}` and
//! `{params.NAME}`. Any other `{...}` (awk's `{print $1}`, the shell's `${VAR}` and `{a,b}`)
//! is the shell's and left as written.

use std::ops::Range;

/// Which declaration a placeholder names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Inputs,
    Outputs,
    Params,
}

impl Group {
    pub fn word(self) -> &'static str {
        match self {
            Group::Inputs => "inputs",
            Group::Outputs => "outputs",
            Group::Params => "params",
        }
    }

    /// The prefix of the environment variable that carries the same value (`PIPE_INPUT_`).
    pub fn env_prefix(self) -> &'static str {
        match self {
            Group::Inputs => "PIPE_INPUT_",
            Group::Outputs => "PIPE_OUTPUT_",
            Group::Params => "PIPE_PARAM_",
        }
    }
}

/// One placeholder in a `run:` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// Byte range of `{...}` in the text.
    pub span: Range<usize>,
    pub group: Group,
    pub name: String,
}

/// Whether `name` may name an input, an output or a parameter: `[A-Za-z_][A-Za-z0-9_]*`
/// (it becomes part of an environment variable's name).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The environment variable for `name` in `group`: `PIPE_INPUT_DATA`.
pub fn env_name(group: Group, name: &str) -> String {
    format!("{}{}", group.env_prefix(), name.to_ascii_uppercase())
}

/// Every placeholder in `text`, in order. `{inputs.}` or `{inputs.a-b}` is not one (and is left
/// to the shell); the spec layer reports those that look meant (see [`suspicious`]).
pub fn placeholders(text: &str) -> Vec<Placeholder> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find('{').map(|i| i + from) {
        from = open + 1;
        let Some(close) = text[open..].find('}').map(|i| i + open) else { break };
        let inner = &text[open + 1..close];
        let Some((group, name)) = inner.split_once('.') else { continue };
        let group = match group {
            "inputs" => Group::Inputs,
            "outputs" => Group::Outputs,
            "params" => Group::Params,
            _ => continue,
        };
        if valid_name(name) {
            out.push(Placeholder { span: open..close + 1, group, name: name.to_string() });
            from = close + 1;
        }
    }
    out
}

/// `{input.x}`, `{output.x}`, `{param.x}`: almost a placeholder, most likely a typo. Returns the
/// text of each, with its byte offset.
pub fn suspicious(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (offset, _) in text.match_indices('{') {
        let rest = &text[offset + 1..];
        let Some(close) = rest.find('}') else { break };
        let inner = &rest[..close];
        if let Some((group, _)) = inner.split_once('.') {
            if ["input", "output", "param", "in", "out", "inputs", "outputs", "params"].contains(&group)
                && placeholders(&text[offset..offset + close + 2]).is_empty()
            {
                out.push((offset, format!("{{{inner}}}")));
            }
        }
    }
    out
}

/// `text` with each placeholder replaced by `value(placeholder)`.
pub fn substitute(text: &str, mut value: impl FnMut(&Placeholder) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for p in placeholders(text) {
        out.push_str(&text[last..p.span.start]);
        out.push_str(&value(&p));
        last = p.span.end;
    }
    out.push_str(&text[last..]);
    out
}

/// `s` quoted for `sh`: unchanged when it is plain, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_placeholders_and_leaves_the_shell_its_braces() {
        let text = "awk '{print $1}' {inputs.data} > {outputs.table} ${HOME} {params.min_len}{a,b}";
        let found: Vec<(Group, String)> = placeholders(text).into_iter().map(|p| (p.group, p.name)).collect();
        assert_eq!(
            found,
            [(Group::Inputs, "data".into()), (Group::Outputs, "table".into()), (Group::Params, "min_len".into())]
        );
        let out = substitute(text, |p| format!("<{}>", p.name));
        assert_eq!(out, "awk '{print $1}' <data> > <table> ${HOME} <min_len>{a,b}");
        assert_eq!(suspicious("cat {input.data} {inputs.ok}"), [(4, "{input.data}".to_string())]);
    }

    #[test]
    fn quoting_is_safe_for_sh() {
        assert_eq!(shell_quote("/a/b-c.tsv"), "/a/b-c.tsv");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf x)"), "'$(rm -rf x)'");
        assert_eq!(env_name(Group::Params, "min_len"), "PIPE_PARAM_MIN_LEN");
    }
}
