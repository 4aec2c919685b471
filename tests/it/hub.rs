//! Hub models in the key, through the real binary: a tokenize step whose tokenizer is a hub id
//! is keyed by the commit the hub serves (a small hub on 127.0.0.1, `HF_ENDPOINT`), reruns
//! when the hub moves, says so in `pipe status`, and fails as bad input (exit 2) with a `help:`
//! line when the hub is unreachable.

#[path = "../../steps/tests/it/hub/server.rs"]
mod server;

use std::path::Path;

use crate::support::{Project, Run};
use server::Hub;

const ID: &str = "org/tiny-bert";
const VOCAB_1: &[u8] = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n";
const VOCAB_2: &[u8] = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nworld\nhello\n";

const PIPELINE: &str = "name: hub
steps:
  data:
    kind: download
    url: data.tsv
  tok:
    kind: tokenize
    inputs:
      data: data
    tokenizer: org/tiny-bert
";

fn publish(hub: &Hub, vocab: &[u8]) -> String {
    hub.commit(ID, &[("vocab.txt", vocab), ("tokenizer_config.json", br#"{"do_lower_case": true}"#)])
}

fn pipe(project: &Project, hf_home: &Path, endpoint: &str, args: &[&str]) -> Run {
    let output = project.command(args).env("HF_ENDPOINT", endpoint).env("HF_HOME", hf_home).output().expect("run pipe");
    Run::from(output)
}

#[test]
fn a_hub_tokenizer_is_keyed_by_its_commit_and_reruns_when_the_hub_moves() {
    let hub = Hub::start();
    let first = publish(&hub, VOCAB_1);
    let project = Project::new();
    project.write("data.tsv", "id\tdocument\tlabel\n1\thello world\t1\n");
    project.write("p.yaml", PIPELINE);
    let hf_home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let run = |args: &[&str]| pipe(&project, hf_home.path(), &endpoint, args);

    assert_eq!(run(&["run", "p.yaml", "--json"]).expect_code(0).status_of("tok"), "ran");
    // The files landed in $HF_HOME/hub, under the commit.
    let snapshot = hf_home.path().join("hub/models--org--tiny-bert/snapshots").join(&first);
    assert_eq!(std::fs::read(snapshot.join("vocab.txt")).unwrap(), VOCAB_1);
    assert_eq!(run(&["run", "p.yaml", "--json"]).expect_code(0).status_of("tok"), "cached");
    let status = run(&["status", "p.yaml", "--json"]).expect_code(0).json();
    assert_eq!(status["steps"][1]["state"], "up-to-date", "{status}");

    let second = publish(&hub, VOCAB_2);
    let status = run(&["status", "p.yaml", "--json"]).expect_code(0).json();
    assert_eq!(status["steps"][1]["state"], "stale", "{status}");
    let moved = format!("hub model {ID} moved: {} -> {}", &first[..12], &second[..12]);
    assert_eq!(status["steps"][1]["reasons"], serde_json::json!([moved]), "{status}");
    let text = run(&["status", "p.yaml"]).expect_code(0);
    assert!(text.stdout.contains(&moved), "{}", text.stdout);

    assert_eq!(run(&["run", "p.yaml", "--json"]).expect_code(0).status_of("tok"), "ran");
    assert_eq!(run(&["run", "p.yaml", "--json"]).expect_code(0).status_of("tok"), "cached");
    // Pinning the first commit by hand finds its result again, whatever main says now.
    let pinned = format!("tok.tokenizer={ID}@{first}");
    assert_eq!(run(&["run", "p.yaml", "--json", "--set", &pinned]).expect_code(0).status_of("tok"), "cached");

    // The hub goes away: an unpinned id cannot be keyed, a pinned one in the hub cache still can.
    drop(hub);
    let failed = run(&["run", "p.yaml"]).expect_code(2);
    let out = format!("{}{}", failed.stdout, failed.stderr);
    assert!(out.contains(&format!("hub model `{ID}` (revision `main`)")), "{out}");
    assert!(
        out.contains("help: download the model where the hub is reachable and give its local directory as `tokenizer`"),
        "{out}"
    );
    // `pipe status` says the key cannot be known, and why, instead of a bare "stale".
    let status = run(&["status", "p.yaml", "--json"]).expect_code(0).json();
    assert_eq!(status["steps"][1]["state"], "unknown", "{status}");
    assert!(status["steps"][1]["error"].as_str().unwrap().contains("could not ask the hub"), "{status}");
    assert_eq!(run(&["run", "p.yaml", "--json", "--set", &pinned]).expect_code(0).status_of("tok"), "cached");
}

#[test]
fn a_value_that_is_neither_a_path_nor_a_hub_id_is_refused_before_anything_runs() {
    let project = Project::new();
    project.write("data.tsv", "id\tdocument\tlabel\n1\thello world\t1\n");
    project.write("p.yaml", &PIPELINE.replace("tokenizer: org/tiny-bert", "tokenizer: models/org/tiny-bert"));
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    assert!(run.stderr.contains("names `models/org/tiny-bert`, which is neither an existing path"), "{}", run.stderr);
    assert!(run.stderr.contains("nor a hub model id"), "{}", run.stderr);
    assert!(!project.cache().exists(), "nothing ran");
}
