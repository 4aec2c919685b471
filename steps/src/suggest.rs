//! "Did you mean": the one place that picks the closest of some names to a misspelled one, for
//! the runner's pipeline errors and the steps' column errors alike.

/// The candidate closest to `name` (case-insensitively, by Jaro-Winkler similarity), when it is
/// close enough to be a typo of it.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&name, &c.to_lowercase()), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `did you mean `x`?` for the closest candidate, if any.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_only() {
        let cols = ["id", "document", "label"];
        assert_eq!(closest("documnet", cols), Some("document"));
        assert_eq!(closest("Label", cols), Some("label"));
        assert_eq!(closest("sentence", cols), None);
        assert_eq!(did_you_mean("lables", cols).as_deref(), Some("did you mean `label`?"));
    }
}
