//! Hub references through the real `hf-hub` client against a small hub on 127.0.0.1
//! ([`server`]): pinning `id[@revision]` to the commit sha the hub serves, fetching exactly
//! that commit (model directories and tokenizers), offline use from the hub cache, and the
//! errors of an unreachable hub. Endpoint and cache come from the `Environment`, never from
//! process-wide variables (the tests of this binary share one process).

mod server;

use std::fs;
use std::path::Path;

use pipe_steps::bert::model_dir::ModelDir;
use pipe_steps::hub::{self, HubRef};
use pipe_steps::tensor_set::TensorSet;
use pipe_steps::text::Tokenize;
use pipe_steps::{Environment, Params, StepError};
use serde_json::json;
use tempfile::TempDir;

use crate::text_support::{message, run_env, table};
use server::{unreachable_endpoint, Hub};

const ID: &str = "org/tiny-bert";
const VOCAB_1: &[u8] = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n";
const VOCAB_2: &[u8] = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nworld\nhello\n";
const TOKENIZER_CONFIG: &[u8] = br#"{"do_lower_case": true}"#;

fn env(endpoint: &str, cache: &TempDir) -> Environment {
    Environment {
        hub_endpoint: Some(endpoint.to_string()),
        hub_cache: Some(cache.path().to_path_buf()),
        ..Environment::default()
    }
}

fn pin(value: &str, env: &Environment) -> Result<String, StepError> {
    let mut params = Params::default();
    params.set("tokenizer", value.into());
    hub::pin_param(&mut params, "tokenizer", env)?;
    Ok(params.str("tokenizer").unwrap().to_string())
}

fn vocab_commit(hub: &Hub, vocab: &[u8]) -> String {
    hub.commit(ID, &[("vocab.txt", vocab), ("tokenizer_config.json", TOKENIZER_CONFIG)])
}

/// The ids `tokenize` gives "hello world" with the tokenizer `value`.
fn tokenize(value: &str, env: &Environment) -> Result<Vec<u32>, StepError> {
    let (_dir, path) = table("t.tsv", "id\tdocument\tlabel\n1\thello world\t1\n");
    let out = run_env(&Tokenize, json!({ "tokenizer": value }), &[("data", &path)], env)?;
    Ok(TensorSet::load(&out.path().join("tensors")).unwrap().ids(0).to_vec())
}

#[test]
fn pinning_resolves_the_revision_to_the_commit_the_hub_serves() {
    let hub = Hub::start();
    let sha = vocab_commit(&hub, VOCAB_1);
    let cache = tempfile::tempdir().unwrap();
    let env = env(&hub.endpoint(), &cache);
    assert_eq!(pin(ID, &env).unwrap(), format!("{ID}@{sha}"));
    assert_eq!(hub.requests(), vec![format!("/api/models/{ID}/revision/main")]);
    // A tag or branch is resolved the same way.
    hub.set_ref(ID, "v1", &sha);
    assert_eq!(pin(&format!("{ID}@v1"), &env).unwrap(), format!("{ID}@{sha}"));
}

#[test]
fn a_new_commit_on_the_hub_changes_the_pinned_value() {
    let hub = Hub::start();
    let first = vocab_commit(&hub, VOCAB_1);
    let cache = tempfile::tempdir().unwrap();
    let env = env(&hub.endpoint(), &cache);
    assert_eq!(pin(ID, &env).unwrap(), format!("{ID}@{first}"));
    let second = vocab_commit(&hub, VOCAB_2);
    assert_ne!(first, second);
    // Within one run (one Environment) every step gets the commit resolved first...
    assert_eq!(pin(ID, &env).unwrap(), format!("{ID}@{first}"));
    assert_eq!(hub.requests().len(), 1, "the hub was asked twice in one run");
    // ...and the next run sees the new one.
    let env = self::env(&hub.endpoint(), &cache);
    assert_eq!(pin(ID, &env).unwrap(), format!("{ID}@{second}"));
    // The old commit stays reachable by its sha.
    assert_eq!(pin(&format!("{ID}@{first}"), &env).unwrap(), format!("{ID}@{first}"));
}

#[test]
fn a_full_sha_is_pinned_already_and_needs_no_network() {
    let cache = tempfile::tempdir().unwrap();
    let env = env(&unreachable_endpoint(), &cache);
    let sha = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(pin(&format!("{ID}@{sha}"), &env).unwrap(), format!("{ID}@{sha}"));
    // Local paths are no hub ids either.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().to_str().unwrap();
    assert_eq!(pin(local, &env).unwrap(), local);
}

#[test]
fn an_unreachable_hub_is_bad_input_naming_the_model_with_help() {
    let cache = tempfile::tempdir().unwrap();
    let endpoint = unreachable_endpoint();
    let env = env(&endpoint, &cache);
    let e = pin(ID, &env).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    let m = message(&e);
    assert!(m.contains(&format!("`tokenizer`: hub model `{ID}` (revision `main`)")), "{m}");
    assert!(m.contains(&endpoint), "{m}");
    assert!(
        m.contains("help: download the model where the hub is reachable and give its local directory as `tokenizer`"),
        "{m}"
    );
    assert!(m.contains(&format!("or pin `{ID}@<sha>` of a commit already in the hub cache")), "{m}");
}

#[test]
fn the_help_of_an_unreachable_hub_names_a_commit_in_the_hub_cache() {
    let hub = Hub::start();
    let sha = vocab_commit(&hub, VOCAB_1);
    let cache = tempfile::tempdir().unwrap();
    let online = env(&hub.endpoint(), &cache);
    tokenize(ID, &online).unwrap();
    drop(hub);
    let e = pin(ID, &env(&online.hub_endpoint.clone().unwrap(), &cache)).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    assert!(message(&e).contains(&format!("or pin `{ID}@{sha}` (in the hub cache")), "{}", message(&e));
}

#[test]
fn an_unknown_model_or_revision_is_bad_input() {
    let hub = Hub::start();
    vocab_commit(&hub, VOCAB_1);
    let cache = tempfile::tempdir().unwrap();
    let env = env(&hub.endpoint(), &cache);
    for value in ["org/no-such-model".to_string(), format!("{ID}@no-such-branch")] {
        let e = pin(&value, &env).unwrap_err();
        assert!(e.is_bad_input(), "{e}");
        assert!(message(&e).contains("was not found on the hub"), "{}", message(&e));
    }
}

#[test]
fn the_tokenizer_loader_fetches_exactly_the_pinned_commit_then_works_offline() {
    let hub = Hub::start();
    let first = vocab_commit(&hub, VOCAB_1);
    let second = vocab_commit(&hub, VOCAB_2);
    let cache = tempfile::tempdir().unwrap();
    let online = env(&hub.endpoint(), &cache);
    // [CLS] hello world [SEP] in each commit's vocabulary.
    assert_eq!(tokenize(&format!("{ID}@{first}"), &online).unwrap(), [2, 5, 6, 3]);
    assert_eq!(tokenize(&format!("{ID}@{second}"), &online).unwrap(), [2, 6, 5, 3]);
    // Both commits' files are in the hub cache, under their shas.
    let repo = cache.path().join("models--org--tiny-bert");
    assert_eq!(fs::read(repo.join("snapshots").join(&first).join("vocab.txt")).unwrap(), VOCAB_1);
    assert_eq!(fs::read(repo.join("snapshots").join(&second).join("vocab.txt")).unwrap(), VOCAB_2);
    let asked = hub.requests().len();
    // No tokenizer.json in either commit: asked once per commit, then remembered.
    assert_eq!(tokenize(&format!("{ID}@{first}"), &online).unwrap(), [2, 5, 6, 3]);
    assert_eq!(hub.requests().len(), asked, "{:?}", &hub.requests()[asked..]);
    drop(hub);
    let offline = env(&online.hub_endpoint.clone().unwrap(), &cache);
    assert_eq!(tokenize(&format!("{ID}@{second}"), &offline).unwrap(), [2, 6, 5, 3]);
    // A commit that is not in the cache cannot be fetched: a clear failure naming the model.
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let e = tokenize(&format!("{ID}@{missing}"), &offline).unwrap_err();
    let m = message(&e);
    assert!(m.contains(&format!("could not fetch tokenizer.json of hub model `{ID}@{missing}`")), "{m}");
    assert!(m.contains("help: the Hugging Face hub is unreachable from here"), "{m}");
}

/// A model directory served as the hub serves one: small files directly, weights through a
/// redirect to the large-file CDN.
fn model_commit(hub: &Hub, id: &str, weights: &[u8], tokenizer: Option<&[u8]>) -> String {
    let mut files: Vec<(&str, &[u8])> =
        vec![("config.json", br#"{"model_type": "bert"}"#), ("model.safetensors", weights)];
    if let Some(t) = tokenizer {
        files.push(("tokenizer.json", t));
    }
    hub.commit(id, &files)
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}

#[test]
fn a_model_directory_is_fetched_at_its_revision_through_the_real_loader() {
    let hub = Hub::start();
    let weights_1 = vec![1u8; 5000];
    let weights_2 = vec![2u8; 7000];
    let first = model_commit(&hub, "org/bert", &weights_1, Some(b"{\"tok\": 1}"));
    let second = model_commit(&hub, "org/bert", &weights_2, None);
    let cache = tempfile::tempdir().unwrap();
    let online = env(&hub.endpoint(), &cache);

    let dir = ModelDir::resolve(None, Some(&format!("org/bert@{first}")), &online).unwrap();
    assert_eq!(read(&dir.weights), weights_1);
    assert_eq!(read(dir.tokenizer.as_deref().unwrap()), b"{\"tok\": 1}");
    assert!(hub.requests().iter().any(|r| r.starts_with("/cdn/")), "weights come through the CDN redirect");

    let dir = ModelDir::resolve(None, Some(&format!("org/bert@{second}")), &online).unwrap();
    assert_eq!(read(&dir.weights), weights_2);
    assert!(dir.tokenizer.is_none(), "the second commit has no tokenizer.json");
    assert!(dir.weights.to_string_lossy().contains(&second));

    // Offline: both commits come from the hub cache (the absent tokenizer.json included).
    drop(hub);
    let offline = env(&online.hub_endpoint.clone().unwrap(), &cache);
    assert_eq!(
        read(&ModelDir::resolve(None, Some(&format!("org/bert@{first}")), &offline).unwrap().weights),
        weights_1
    );
    let dir = ModelDir::resolve(None, Some(&format!("org/bert@{second}")), &offline).unwrap();
    assert_eq!((read(&dir.weights), dir.tokenizer), (weights_2, None));
}

#[test]
fn a_renamed_model_is_followed_through_its_redirect() {
    let hub = Hub::start();
    let sha = model_commit(&hub, "org/new-name", &[7u8; 300], None);
    hub.rename("org/old-name", "org/new-name");
    let cache = tempfile::tempdir().unwrap();
    let env = env(&hub.endpoint(), &cache);
    let mut params = Params::default();
    params.set("model", "org/old-name".into());
    hub::pin_param(&mut params, "model", &env).unwrap();
    assert_eq!(params.str("model").unwrap(), format!("org/old-name@{sha}"));
    let dir = ModelDir::resolve(None, params.opt_str("model").unwrap(), &env).unwrap();
    assert_eq!(read(&dir.weights), [7u8; 300]);
}

#[test]
fn a_file_of_another_commit_than_the_pinned_one_is_refused() {
    let hub = Hub::start();
    let first = model_commit(&hub, "org/bert", &[1u8; 10], None);
    let second = model_commit(&hub, "org/bert", &[2u8; 10], None);
    hub.misreport_commit(Some(&second));
    let cache = tempfile::tempdir().unwrap();
    let e = ModelDir::resolve(None, Some(&format!("org/bert@{first}")), &env(&hub.endpoint(), &cache)).unwrap_err();
    assert!(e.to_string().contains(&format!("at commit {second}, not the pinned one")), "{e}");
}

#[test]
fn missing_weights_at_a_revision_say_so() {
    let hub = Hub::start();
    let sha = hub.commit("org/torch-only", &[("config.json", b"{}"), ("pytorch_model.bin", b"x")]);
    let cache = tempfile::tempdir().unwrap();
    let e = ModelDir::resolve(None, Some(&format!("org/torch-only@{sha}")), &env(&hub.endpoint(), &cache)).unwrap_err();
    assert!(e.is_bad_input(), "{e}");
    let m = message(&e);
    assert!(m.contains(&format!("hub model `org/torch-only@{sha}` has no model.safetensors")), "{m}");
    assert!(m.contains("help: only safetensors checkpoints are read"), "{m}");
}

#[test]
fn hub_refs_print_as_they_parse() {
    let r = HubRef::parse("org/bert@v1").unwrap();
    assert_eq!(r.to_string(), "org/bert@v1");
    assert_eq!(HubRef::parse("org/bert").unwrap().to_string(), "org/bert");
}
