//! Finds where a key sits in a block-style YAML file, so errors found after parsing (unknown
//! parameter, bad reference) can point at a line. serde_yaml gives positions only for syntax
//! and type errors; this follows indentation, which is how pipeline files are written.

use crate::spec::spec_error::Location;

/// The location of the key at `path` (e.g. `["steps", "encode", "max_len"]`), if found.
pub fn locate(source: &str, path: &[&str]) -> Option<Location> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (index, raw) in source.lines().enumerate() {
        let line = strip_comment(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('-') || trimmed.starts_with("---") {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some(key) = key_of(trimmed) else { continue };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        if stack.len() == path.len() && stack.iter().zip(path).all(|((_, k), p)| k == p) {
            return Some(Location { line: index + 1, column: indent + 1 });
        }
    }
    None
}

/// The location of the value of the key at `path` (the text after `key: `).
pub fn locate_value(source: &str, path: &[&str]) -> Option<Location> {
    let key_loc = locate(source, path)?;
    let line = source.lines().nth(key_loc.line - 1)?;
    let after_key = line[key_loc.column - 1..].find(':')? + key_loc.column;
    let rest = &line[after_key..];
    let offset = rest.len() - rest.trim_start().len();
    if rest.trim().is_empty() {
        return Some(key_loc);
    }
    Some(Location { line: key_loc.line, column: after_key + offset + 1 })
}

/// The location of `needle` in the value of the key at `path`: on the key's line or the more
/// indented lines under it (a flow mapping `{table: clean.tsv}` or a block list). Falls back to
/// the key.
pub fn locate_text(source: &str, path: &[&str], needle: &str) -> Option<Location> {
    let key_loc = locate(source, path)?;
    let indent = key_loc.column - 1;
    for (i, line) in source.lines().enumerate().skip(key_loc.line - 1) {
        let trimmed = line.trim_start();
        let deeper = line.len() - trimmed.len() > indent;
        if i + 1 > key_loc.line && !trimmed.is_empty() && !deeper {
            break;
        }
        let from = if i + 1 == key_loc.line { indent + path.last().map_or(0, |k| k.len()) } else { 0 };
        if let Some(at) = line.get(from..).and_then(|rest| rest.find(needle)) {
            return Some(Location { line: i + 1, column: from + at + 1 });
        }
    }
    Some(key_loc)
}

fn strip_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(i) => &line[..i],
        None if line.trim_start().starts_with('#') => "",
        None => line,
    }
}

fn key_of(trimmed: &str) -> Option<&str> {
    let colon = trimmed.find(':')?;
    let after = trimmed[colon + 1..].chars().next();
    if !matches!(after, None | Some(' ') | Some('\t')) {
        return None;
    }
    let key = trimmed[..colon].trim();
    Some(key.trim_matches(|c| c == '"' || c == '\''))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "name: x\nsteps:\n  a:\n    kind: download # c\n    url: http://h/f\n  b:\n    kind: tokenize\n    inputs:\n      data: a\n    url: y\n";

    #[test]
    fn finds_nested_keys_and_values() {
        assert_eq!(locate(SRC, &["steps", "a", "kind"]), Some(Location { line: 4, column: 5 }));
        assert_eq!(locate(SRC, &["steps", "b", "url"]), Some(Location { line: 10, column: 5 }));
        assert_eq!(locate(SRC, &["steps", "b", "inputs", "data"]), Some(Location { line: 9, column: 7 }));
        assert_eq!(locate_value(SRC, &["steps", "b", "inputs", "data"]), Some(Location { line: 9, column: 13 }));
        assert_eq!(locate(SRC, &["steps", "c"]), None);
        let flow = "steps:\n  c:\n    outputs: {table: t.tsv}\n    deps:\n      - a.py\n  d:\n    x: a.py\n";
        assert_eq!(locate_text(flow, &["steps", "c", "outputs"], "t.tsv"), Some(Location { line: 3, column: 22 }));
        assert_eq!(locate_text(flow, &["steps", "c", "deps"], "a.py"), Some(Location { line: 5, column: 9 }));
        assert_eq!(locate_text(flow, &["steps", "c", "deps"], "zz"), Some(Location { line: 4, column: 5 }));
    }
}
