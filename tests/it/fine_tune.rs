//! `fine-tune`'s `class_weights`, `select_by` and `early_stopping_patience` through the real
//! binary: written in YAML and with `--set`, keyed only when they differ from the defaults,
//! their errors (exit 2, naming the parameter), and what `pipe report` says of the saved epoch.

use crate::support::{tiny_bert_pipeline, tiny_bert_table, Project, TinyBert};

fn pipeline(finetune: &str) -> String {
    tiny_bert_pipeline(&TinyBert { name: "selection", split: true, epochs: 6, finetune, ..TinyBert::default() })
}

fn project() -> Project {
    let project = Project::new();
    project.write("data.tsv", &tiny_bert_table(240, 77));
    project
}

#[test]
fn the_defaults_keep_the_key_and_the_report_says_what_was_chosen_and_saved() {
    let project = project();
    project.write("plain.yaml", &pipeline("    log_every: 0\n"));
    project.run(&["run", "plain.yaml"]).expect_code(0);
    // `select_by: accuracy` is the default: the cached result is the same key's.
    project.write("accuracy.yaml", &pipeline("    log_every: 0\n    select_by: accuracy\n"));
    let same = project.run(&["run", "accuracy.yaml", "--json"]).expect_code(0);
    assert_eq!(same.status_of("finetune"), "cached");
    let table = project.run(&["report"]).expect_code(0).stdout;
    assert!(table.contains("by validation accuracy") && table.contains("the saved model is this epoch's"), "{table}");
    assert!(table.contains("valid F1"), "{table}");

    project.write(
        "tuned.yaml",
        &pipeline(
            "    log_every: 0\n    class_weights: [1.0, 2.0]\n    select_by: macro_f1\n    early_stopping_patience: 1\n",
        ),
    );
    let tuned = project.run(&["run", "tuned.yaml", "--json"]).expect_code(0);
    assert_eq!(tuned.status_of("finetune"), "ran");
    let json = project.run(&["report", "--format", "json"]).expect_code(0).json();
    let training = &json["latest"]["training"];
    assert_eq!(training["select_by"], "macro_f1");
    assert_eq!(training["class_weights"], serde_json::json!([1.0, 2.0]));
    let chosen = json["latest"]["chosen"]["epoch"].as_u64().unwrap();
    assert_eq!(json["latest"]["chosen"]["by"], "valid_macro_f1");
    assert_eq!(json["latest"]["saved_epoch"].as_u64(), Some(chosen));
    let epochs = training["epochs"].as_array().unwrap();
    let f1: Vec<f64> = epochs.iter().map(|e| e["valid_macro_f1"].as_f64().unwrap()).collect();
    let best = (0..f1.len()).fold(0, |b, i| if f1[i] > f1[b] { i } else { b }) + 1;
    assert_eq!(chosen as usize, best, "{f1:?}");
    let table = project.run(&["report"]).expect_code(0).stdout;
    assert!(table.contains(&format!("chosen epoch {chosen} by validation macro F1")), "{table}");
    assert!(table.contains("the saved model is this epoch's"), "{table}");
    assert!(table.contains("class weights of the training loss, in label order: 1.0000, 2.0000"), "{table}");
    // Patience 1: the run stops at the first epoch without improvement, unless it never has one.
    if epochs.len() < 6 {
        assert_eq!(epochs.len(), best + 1);
        assert_eq!(training["stopped_early"]["after_epoch"].as_u64(), Some(best as u64 + 1));
        let line = format!(
            "stopped early after epoch {} of 6: validation macro F1 had not improved for 1 epoch(s) since epoch {best}",
            best + 1
        );
        assert!(table.contains(&line), "{table}");
    } else {
        assert!(training["stopped_early"].is_null() && best == 6, "{training}");
    }
}

#[test]
fn bad_values_are_errors_naming_the_parameter() {
    let project = project();
    project.write("p.yaml", &pipeline("    class_weights: balance\n"));
    let run = project.run(&["run", "p.yaml"]).expect_code(2);
    assert!(run.stderr.contains("class_weights") && run.stderr.contains("did you mean `balanced`?"), "{}", run.stderr);

    project.write("q.yaml", &pipeline("    log_every: 0\n"));
    let run = project.run(&["run", "q.yaml", "--set", "finetune.class_weights=[1, 2, 3]"]).expect_code(2);
    // The step's failure line and its help are in the run's output (stdout), beside its logs.
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("parameter `class_weights` has 3 weight(s), and the training set has 2 classes"), "{all}");
    assert!(all.contains("help: give one weight per class"), "{all}");
    let run = project.run(&["run", "q.yaml", "--set", "finetune.early_stopping_patience=0"]).expect_code(2);
    assert!(run.stderr.contains("early_stopping_patience") && run.stderr.contains("at least 1"), "{}", run.stderr);
}
