//! The `download` step against a real HTTP server on 127.0.0.1: pins, retries, bad bytes,
//! HTTP errors, mirrors and local files.

use std::fs;

use crate::support::http::{Behavior, Server};
use crate::support::{settings, Project};

const BODY: &[u8] = b"id\tdocument\tlabel\n1\t\xea\xb0\x80\xeb\x82\x98\t1\n";

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn pinned(url: &str, sha: &str) -> String {
    format!("name: dl\nsteps:\n  fetch:\n    kind: download\n    url: {url}\n    sha256: {sha}\n    retries: 3\n")
}

#[test]
fn a_pinned_download_is_keyed_by_its_checksum_and_reused_offline() {
    let server = Server::start();
    server.route("/f.tsv", Behavior::Serve(BODY.to_vec()));
    let project = Project::new();
    project.write("p.yaml", &pinned(&server.url("/f.tsv"), &sha256_hex(BODY)));
    assert_eq!(project.run(&["run", "p.yaml", "--json"]).expect_code(0).status_of("fetch"), "ran");
    // The URL moves (and would now 404): the pin still names the cached bytes.
    project.write("p.yaml", &pinned(&server.url("/moved.tsv"), &sha256_hex(BODY)));
    assert_eq!(project.run(&["run", "p.yaml", "--json"]).expect_code(0).status_of("fetch"), "cached");
    assert_eq!(server.hits("/moved.tsv"), 0);
    assert_eq!(server.hits("/f.tsv"), 1);
}

#[test]
fn transient_failures_are_retried() {
    let server = Server::start();
    server.route("/flaky.tsv", Behavior::FailThenServe { failures: 2, body: BODY.to_vec() });
    let project = Project::new();
    project.write("p.yaml", &pinned(&server.url("/flaky.tsv"), &sha256_hex(BODY)));
    let run = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    assert_eq!(run.status_of("fetch"), "ran");
    assert_eq!(server.hits("/flaky.tsv"), 3);
    assert!(run.stderr.contains("HTTP 503"), "{}", run.stderr);
}

#[test]
fn wrong_bytes_are_rejected_and_nothing_is_cached() {
    let server = Server::start();
    server.route("/bad.tsv", Behavior::Serve(b"tampered".to_vec()));
    let project = Project::new();
    project.write("p.yaml", &pinned(&server.url("/bad.tsv"), &sha256_hex(BODY)));
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    assert!(run.stdout.contains("sha256 mismatch"), "{}", run.stdout);
    assert!(project.entries().is_empty());
    assert_eq!(fs::read_dir(project.cache().join("tmp")).unwrap().count(), 0, "scratch left behind");
    settings(Some(&project)).bind(|| insta::assert_snapshot!("sha_mismatch", run.stdout));
}

#[test]
fn http_404_is_a_clear_error_without_retries() {
    let server = Server::start();
    let project = Project::new();
    project.write("p.yaml", &pinned(&server.url("/missing.tsv"), &sha256_hex(BODY)));
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    assert!(run.stdout.contains("HTTP 404"), "{}", run.stdout);
    assert_eq!(server.hits("/missing.tsv"), 1);
}

#[test]
fn the_mirror_is_consulted_by_file_name_before_the_network() {
    let server = Server::start();
    let project = Project::new();
    project.write("mirror/ratings.tsv", std::str::from_utf8(BODY).unwrap());
    project.write("p.yaml", &pinned(&server.url("/x/ratings.tsv"), &sha256_hex(BODY)));
    let run = project.run(&["run", "p.yaml", "--mirror", "mirror", "--json"]).expect_code(0);
    assert_eq!(run.status_of("fetch"), "ran");
    assert_eq!(server.hits("/x/ratings.tsv"), 0);
    // A mirror copy that does not match the pin is rejected too.
    project.write("mirror/ratings.tsv", "changed");
    let p2 = project.write("q.yaml", &pinned(&server.url("/x/ratings.tsv"), &sha256_hex(b"other")));
    let run = project.run(&["run", p2.to_str().unwrap(), "--mirror", "mirror"]).expect_code(2);
    assert!(run.stdout.contains("sha256 mismatch"), "{}", run.stdout);
}

#[test]
fn local_paths_and_file_urls_are_keyed_by_content() {
    let project = Project::new();
    let data = project.write("data/table.tsv", "a\n1\n");
    let url = format!("file://{}", data.display());
    project.write("p.yaml", &format!("name: local\nsteps:\n  a:\n    kind: download\n    url: {url}\n  b:\n    kind: download\n    url: data/table.tsv\n"));
    let first = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    // The same bytes by two names are one key: keyed by content, not by location.
    assert_eq!(first.status_of("a"), "ran");
    assert_eq!(first.status_of("b"), "cached");
    assert_eq!(project.run(&["run", "p.yaml", "--json"]).expect_code(0).status_of("b"), "cached");
    project.write("data/table.tsv", "a\n2\n");
    let changed = project.run(&["run", "p.yaml", "--json"]).expect_code(0);
    assert_eq!(changed.status_of("a"), "ran");
    assert_eq!(changed.status_of("b"), "cached");
}

#[test]
fn a_malformed_pin_is_rejected_before_running() {
    let project = Project::new();
    project.write("p.yaml", &pinned("http://127.0.0.1:9/f", "abc"));
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    assert!(run.stderr.contains("sha256"), "{}", run.stderr);
    assert!(!project.cache().exists());
}
