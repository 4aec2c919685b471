//! `pipe report` at the edges: a cache without runs says how to start one, and a failed run is
//! shown as failed with what is missing, not skipped; and the HTML report of a sweep, built from
//! what the runs recorded: the batch log, the variants, the baseline and the ensemble. (The
//! text report of a successful run and the comparison of runs are covered by `nsmc_tiny.rs`.)

use crate::support::http::{Behavior, Server};
use crate::support::{settings, tiny_bert_pipeline, Project, TinyBert};

#[test]
fn a_cache_without_runs_says_how_to_start_one() {
    let project = Project::new();
    let run = project.run(&["report"]).expect_code(2);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    settings(Some(&project)).bind(|| insta::assert_snapshot!("no_runs", run.stderr));
}

#[test]
fn a_failed_run_is_reported_as_failed() {
    let server = Server::start();
    server.route("/missing.tsv", Behavior::Status(404));
    let project = Project::new();
    project.write(
        "p.yaml",
        &format!(
            "name: broken
steps:
  fetch:
    kind: download
    url: {}
  vocab:
    kind: train-tokenizer
    inputs:
      data: fetch
  encode:
    kind: tokenize
    inputs:
      data: fetch
      tokenizer: vocab
  pretrain:
    kind: pretrain
    inputs:
      data: encode
    layers: 1
    hidden: 8
    heads: 1
    intermediate: 16
  finetune:
    kind: fine-tune
    inputs:
      train: encode
      model: pretrain.model
",
            server.url("/missing.tsv")
        ),
    );
    // A URL that answers 404 is bad input (exit 2); the run is recorded as failed.
    project.run(&["run", "p.yaml"]).expect_code(2);
    let report = project.run(&["report"]).expect_code(0);
    assert!(report.stdout.contains("(failed)"), "{}", report.stdout);
    assert!(report.stdout.contains("finetune skipped"), "{}", report.stdout);
    let json = project.run(&["report", "--format", "json"]).expect_code(0).json();
    assert_eq!(json["latest"]["state"], "failed");
    assert!(json["latest"]["training"].is_null());
}

/// A labelled table whose two classes mostly use different words, so a tiny BERT learns a bit.
fn table(rows: usize) -> String {
    let words = [["good", "great", "fine", "nice", "love"], ["bad", "awful", "poor", "dull", "hate"]];
    let mut out = String::from("id\tdocument\tlabel\n");
    for i in 0..rows {
        let label = i % 2;
        // Every seventh word from the other class, so neither model is perfect.
        let text: Vec<&str> =
            (0..5).map(|j| words[if (i + j) % 7 == 0 { 1 - label } else { label }][(i * 3 + j) % 5]).collect();
        out.push_str(&format!("{i}\t{}\t{label}\n", text.join(" ")));
    }
    out
}

/// A BERT of one small layer fine-tuned with a validation split and logged every 5 batches,
/// its evaluations, the linear baseline on the same rows and their ensemble.
fn swept() -> String {
    let after = "  evaluate_valid:
    kind: evaluate
    inputs: { data: split.valid, model: finetune.model }
  linear:
    kind: linear
    inputs: { train: data, test: data }
    valid_fraction: 0.2
  ensemble:
    kind: ensemble
    inputs:
      valid_a: evaluate_valid.predictions
      test_a: evaluate.predictions
      valid_b: linear.valid_predictions
      test_b: linear.predictions
    names: [bert, linear]
";
    tiny_bert_pipeline(&TinyBert {
        name: "html",
        split: true,
        epochs: 2,
        finetune: "    log_every: 5\n",
        evaluate: true,
        after,
        ..TinyBert::default()
    })
}

/// The `<g class="CLASS">` groups' first texts (legend entries, reference lines).
fn group_texts(html: &str, class: &str) -> Vec<String> {
    html.split(&format!("<g class=\"{class}\">"))
        .skip(1)
        .map(|g| {
            let t = &g[g.find("<text").unwrap()..];
            t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].to_string()
        })
        .collect()
}

#[test]
fn the_html_report_of_a_sweep_charts_the_batch_log_and_compares_the_variants() {
    let project = Project::new();
    project.write("data.tsv", &table(200));
    project.write("p.yaml", &swept());
    project.run(&["run", "p.yaml", "--sweep", "finetune.lr=1e-3,3e-3"]).expect_code(0);

    // The fine-tune metrics keep the logged batches: 160 training rows in batches of 8 are 20
    // updates an epoch, logged every 5.
    let json = project.run(&["report", "--format", "json"]).expect_code(0).json();
    for run in json["comparison"].as_array().unwrap() {
        let updates: Vec<u64> =
            run["training"]["batches"].as_array().unwrap().iter().map(|b| b["update"].as_u64().unwrap()).collect();
        assert_eq!(updates, [5, 10, 15, 20, 25, 30, 35, 40], "{run}");
    }

    project.run(&["report", "--format", "html", "--output", "r.html"]).expect_code(0);
    let html = std::fs::read_to_string(project.path().join("r.html")).unwrap();
    assert_eq!(html.matches("class=\"chart\"").count(), 2, "the loss and the accuracy chart");
    // Both variants in each chart's legend, by the parameter that differs.
    let legend = group_texts(&html, "legend-entry");
    for name in ["finetune.lr=0.001", "finetune.lr=0.003"] {
        assert_eq!(legend.iter().filter(|l| *l == name).count(), 2, "{legend:?}");
    }
    // Loss: a line per variant and where epoch 2 starts; accuracy: validation and test per variant.
    assert_eq!(html.matches("<polyline class=\"series\"").count(), 2 + 4, "{html}");
    assert_eq!(group_texts(&html, "x-mark"), ["epoch 2"]);
    let references = group_texts(&html, "reference");
    assert_eq!(references.iter().filter(|r| r.starts_with("linear baseline: test ")).count(), 1, "{references:?}");
    assert!(references.iter().any(|r| r.starts_with("ensemble: test ")), "{references:?}");
    // The one parameter that differs, with each variant's value.
    let table = &html[html.find("<table class=\"params\">").expect("a parameter table")..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(table.matches("<tr><td>").count(), 1, "{table}");
    assert!(table.contains("<tr><td>finetune.lr</td><td>0.001</td><td>0.003</td></tr>"), "{table}");
    assert_eq!(html.matches("class=\"confusion\"").count(), 2, "a grid per variant");
}

/// Two fine-tunes (seeds 1 and 2) with their evaluations, a linear baseline and a `report`
/// step naming them all.
fn two_seeds() -> String {
    let after = "  finetune_seed2:
    kind: fine-tune
    inputs: { train: split.train, valid: split.valid, test: encode, model: pretrain.model }
    epochs: 2
    batch_size: 8
    lr: 1e-3
    seed: 2
  evaluate_seed2:
    kind: evaluate
    inputs: { data: encode, model: finetune_seed2.model }
  linear:
    kind: linear
    inputs: { train: data, test: data }
    valid_fraction: 0.2
  report:
    kind: report
    steps: [finetune, evaluate, finetune_seed2, evaluate_seed2, linear]
";
    tiny_bert_pipeline(&TinyBert {
        name: "seeds",
        split: true,
        epochs: 2,
        evaluate: true,
        after,
        ..TinyBert::default()
    })
}

#[test]
fn the_report_step_and_pipe_report_agree_on_every_fine_tune_evaluation_and_model() {
    let project = Project::new();
    project.write("data.tsv", &table(100));
    project.write("p.yaml", &two_seeds());
    project.run(&["run", "p.yaml"]).expect_code(0);
    let dir = project.run(&["show", "report", "--path"]).expect_code(0).stdout;
    let dir = std::path::Path::new(dir.trim()).join("report");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let step: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    let cache = project.run(&["report", "--format", "json"]).expect_code(0).json();
    let (step, cache) = (&step["latest"], &cache["latest"]);

    // Every fine-tune, each with its epochs table; the figures are the cache's but for the
    // seconds, which only the run records hold.
    for name in ["finetune", "finetune_seed2"] {
        assert!(md.contains(&format!("## Accuracy per epoch: {name}\n")), "{md}");
    }
    let tunes = |r: &serde_json::Value| -> Vec<(String, Vec<(f64, f64)>)> {
        r["fine_tunes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let epochs = f["training"]["epochs"].as_array().unwrap();
                let figures = epochs
                    .iter()
                    .map(|e| (e["valid_accuracy"].as_f64().unwrap(), e["test_accuracy"].as_f64().unwrap()));
                (f["step"].as_str().unwrap().to_string(), figures.collect())
            })
            .collect()
    };
    assert_eq!(tunes(step).len(), 2, "{step}");
    assert_eq!(tunes(step), tunes(cache));
    assert!(cache["fine_tunes"][1]["training"]["epochs"][0]["seconds"].as_f64().is_some(), "{cache}");
    assert!(step["fine_tunes"][1]["training"]["epochs"][0]["seconds"].is_null(), "{step}");

    // Every evaluation and the baseline compared, with the same figures (`pipe report` also
    // lists what the report step was not given: here nothing else is evaluated).
    assert!(md.contains("## Models compared"), "{md}");
    let models = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        r["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                serde_json::json!([m["step"], m["model"], m["rows"], m["accuracy"], m["macro_f1"], m["valid_accuracy"]])
            })
            .collect()
    };
    let steps: Vec<&str> = step["models"].as_array().unwrap().iter().map(|m| m["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["evaluate", "evaluate_seed2", "linear"]);
    assert!(step["models"][2]["valid_accuracy"].as_f64().is_some(), "{step}");
    assert_eq!(models(step), models(cache));
    for m in step["models"].as_array().unwrap() {
        assert!(md.contains(&format!("| {:.4}", m["accuracy"].as_f64().unwrap())), "{md}");
    }
    assert_eq!(step["evaluation"], cache["evaluation"]);
    assert_eq!(step["chosen"], cache["chosen"]);
}

#[test]
fn a_report_of_something_that_is_not_metrics_is_refused_before_anything_runs() {
    let project = Project::new();
    project.write("data.tsv", &table(20));
    let base = tiny_bert_pipeline(&TinyBert { name: "bad", split: true, epochs: 1, ..TinyBert::default() });
    project.write("a.yaml", &format!("{base}  report:\n    kind: report\n    inputs: {{ training: split.train }}\n"));
    let run = project.run(&["run", "a.yaml"]).expect_code(2);
    assert!(
        run.stderr
            .contains("step `report`: input `training` is `split.train`, which is not a fine-tune's training metrics"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("help: use the `metrics` output of a fine-tune step"), "{}", run.stderr);
    project.write("b.yaml", &format!("{base}  report:\n    kind: report\n    steps: [finetune, split]\n"));
    let run = project.run(&["run", "b.yaml"]).expect_code(2);
    assert!(
        run.stderr.contains("step `report`: `steps` names `split` (kind `split`), which has none of"),
        "{}",
        run.stderr
    );
    project.write("c.yaml", &format!("{base}  report:\n    kind: report\n    steps: [finetuen]\n"));
    let run = project.run(&["run", "c.yaml"]).expect_code(2);
    assert!(run.stderr.contains("`steps` names unknown step `finetuen`"), "{}", run.stderr);
    // Nothing ran: no run is recorded.
    project.run(&["report"]).expect_code(2);
}
