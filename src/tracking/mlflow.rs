//! MLflow tracking through its REST API (`/api/2.0/mlflow/...`, blocking HTTP with ureq): for
//! each run record one MLflow run in the experiment (created when missing), with
//! - tags: the pipeline, the variant of a sweep, pipe's run id, the file, the host, the
//!   overrides, and the members of each ensemble;
//! - params: every step's resolved parameters as the run record has them (`finetune.lr`);
//! - metrics: the training histories per epoch (step = the epoch) and per logged batch
//!   (`finetune.batch.loss`, step = the update), the final evaluations (step 0), and each
//!   ensemble member's weight (`ensemble.weight.linear`);
//! - artifacts: the files of the run's `report` step (report.html, ...), uploaded through the
//!   server's artifact proxy (`mlflow server --serve-artifacts`, the default since MLflow 2);
//! - the end: FINISHED or FAILED, and the end time.
//!
//! Credentials: `MLFLOW_TRACKING_TOKEN` (a bearer token) or `MLFLOW_TRACKING_USERNAME` and
//! `MLFLOW_TRACKING_PASSWORD`, or a `user:password@` in the URI, sent as headers only: the URL
//! requests go to and every message name the server without them.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value as Json};

use super::{RunResults, Series, TrackingError};
use crate::run_record::{RunRecord, RunState};

/// The most parameters, and metrics, one `runs/log-batch` takes (MLflow's limits).
const PARAMS_PER_BATCH: usize = 100;
const METRICS_PER_BATCH: usize = 1000;
/// MLflow's longest parameter value.
const MAX_PARAM_VALUE: usize = 6000;
/// MLflow's longest tag value we send (the limit is higher; overrides can be long).
const MAX_TAG_VALUE: usize = 5000;

/// A tracking server.
pub struct Mlflow {
    /// `http://host:port[/prefix]` without credentials or a trailing slash.
    base: String,
    /// The `Authorization` header, when credentials are given.
    auth: Option<String>,
    agent: ureq::Agent,
}

/// A run as MLflow has it.
pub struct Tracked {
    pub run_id: String,
    /// Where to see it in the MLflow UI.
    pub url: String,
    /// Files that could not be uploaded, and why.
    pub not_uploaded: Option<String>,
}

impl Mlflow {
    /// The server at `uri` (`http://` or `https://`), with credentials from the environment or
    /// the URI.
    pub fn new(uri: &str) -> Result<Mlflow, TrackingError> {
        let mut url = url::Url::parse(uri.trim())
            .map_err(|e| TrackingError::new(format!("the MLflow tracking URI is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TrackingError::new(format!(
                "MLflow tracking URI scheme `{}:` is not supported: pipe talks to a tracking server over http(s)",
                url.scheme()
            )));
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let basic = |user: &str, password: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        };
        let mut auth = if let Some(token) = env("MLFLOW_TRACKING_TOKEN") {
            Some(format!("Bearer {token}"))
        } else {
            env("MLFLOW_TRACKING_USERNAME").map(|u| basic(&u, &env("MLFLOW_TRACKING_PASSWORD").unwrap_or_default()))
        };
        if !url.username().is_empty() {
            let user = percent(url.username());
            let password = percent(url.password().unwrap_or_default());
            auth.get_or_insert_with(|| basic(&user, &password));
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        url.set_query(None);
        url.set_fragment(None);
        let base = url.as_str().trim_end_matches('/').to_string();
        let agent =
            ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5)).timeout(Duration::from_secs(60)).build();
        Ok(Mlflow { base, auth, agent })
    }

    /// Records `run` with what it measured in `experiment`.
    pub fn track(&self, experiment: &str, run: &RunRecord, results: &RunResults) -> Result<Tracked, TrackingError> {
        let experiment_id = self.experiment_id(experiment)?;
        let now = now_millis();
        let start = super::started_millis(run).unwrap_or(now);
        let mut tags = vec![
            ("pipe.pipeline".to_string(), run.pipeline.clone()),
            ("pipe.run".to_string(), run.id.clone()),
            ("pipe.file".to_string(), run.file.display().to_string()),
            ("mlflow.source.name".to_string(), run.file.display().to_string()),
            ("mlflow.source.type".to_string(), "LOCAL".to_string()),
        ];
        if let Some(v) = &run.variant {
            tags.push(("pipe.variant".into(), v.clone()));
        }
        if let Some(h) = &run.host {
            tags.push(("pipe.host".into(), h.clone()));
        }
        if !run.overrides.is_empty() {
            tags.push(("pipe.overrides".into(), run.overrides.join(" ")));
        }
        for step in results.steps.iter().filter(|s| !s.weights.is_empty()) {
            let members: Vec<&str> = step.weights.iter().map(|(m, _)| m.as_str()).collect();
            tags.push((format!("pipe.{}.members", step.step), members.join(", ")));
        }
        let name = match &run.variant {
            Some(v) => format!("{} {} [{v}]", run.pipeline, run.started),
            None => format!("{} {}", run.pipeline, run.started),
        };
        let tags: Vec<Json> = tags.iter().map(|(k, v)| json!({"key": k, "value": clip(v, MAX_TAG_VALUE)})).collect();
        let created = self.call(
            "runs/create",
            &json!({"experiment_id": experiment_id, "run_name": name, "start_time": start, "tags": tags}),
        )?;
        let info = &created["run"]["info"];
        let run_id = info["run_id"]
            .as_str()
            .ok_or_else(|| TrackingError::new(format!("{}: runs/create answered without a run id", self.base)))?
            .to_string();

        let mut params: Vec<Json> = Vec::new();
        for step in &run.steps {
            for (k, v) in &step.params {
                let text = match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                params.push(json!({"key": format!("{}.{k}", step.name), "value": clip(&text, MAX_PARAM_VALUE)}));
            }
        }
        for chunk in params.chunks(PARAMS_PER_BATCH) {
            self.call("runs/log-batch", &json!({"run_id": run_id, "params": chunk}))?;
        }
        let mut metrics: Vec<Json> = Vec::new();
        for step in &results.steps {
            for s in &step.scalars {
                let key = match s.series {
                    Series::Batch => format!("{}.batch.{}", step.step, s.name),
                    Series::Epoch | Series::Final => format!("{}.{}", step.step, s.name),
                };
                let timestamp = s.offset.map_or(now, |o| start + (o * 1000.0) as u64);
                metrics.push(json!({"key": key, "value": s.value, "timestamp": timestamp, "step": s.step}));
            }
            for (member, weight) in &step.weights {
                let key = format!("{}.weight.{member}", step.step);
                metrics.push(json!({"key": key, "value": weight, "timestamp": now, "step": 0}));
            }
        }
        for chunk in metrics.chunks(METRICS_PER_BATCH) {
            self.call("runs/log-batch", &json!({"run_id": run_id, "metrics": chunk}))?;
        }

        let files: Vec<(String, &std::path::Path)> =
            results.steps.iter().flat_map(|s| s.files.iter().map(move |f| (s.step.clone(), f.as_path()))).collect();
        let artifact_uri = info["artifact_uri"].as_str().unwrap_or_default();
        let not_uploaded = match (files.is_empty(), proxied_path(artifact_uri)) {
            (true, _) => None,
            (false, Some(root)) => {
                for (step, file) in &files {
                    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    self.upload(&format!("{root}/{step}/{name}"), file)?;
                }
                None
            }
            (false, None) => Some(format!(
                "the report is not uploaded: the server does not proxy artifacts (the run's artifact URI is \
                 `{artifact_uri}`); start it with `mlflow server --serve-artifacts`"
            )),
        };
        let status = match run.state {
            RunState::Succeeded => "FINISHED",
            RunState::Failed => "FAILED",
            RunState::Running => "KILLED",
        };
        self.call("runs/update", &json!({"run_id": run_id, "status": status, "end_time": now_millis()}))?;
        Ok(Tracked { url: format!("{}/#/experiments/{experiment_id}/runs/{run_id}", self.base), run_id, not_uploaded })
    }

    /// The id of experiment `name`, created if there is none.
    fn experiment_id(&self, name: &str) -> Result<String, TrackingError> {
        let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let get = || self.get(&format!("experiments/get-by-name?experiment_name={encoded}"));
        let id = |doc: &Json| doc["experiment"]["experiment_id"].as_str().map(str::to_string);
        match get() {
            Ok(doc) => id(&doc).ok_or_else(|| self.odd("experiments/get-by-name")),
            Err(e) if e.code.as_deref() == Some("RESOURCE_DOES_NOT_EXIST") => {
                match self.call("experiments/create", &json!({"name": name})) {
                    Ok(doc) => {
                        doc["experiment_id"].as_str().map(str::to_string).ok_or_else(|| self.odd("experiments/create"))
                    }
                    // Created meanwhile by another run.
                    Err(e) if e.code.as_deref() == Some("RESOURCE_ALREADY_EXISTS") => {
                        id(&get()?).ok_or_else(|| self.odd("experiments/get-by-name"))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn odd(&self, endpoint: &str) -> TrackingError {
        TrackingError::new(format!("{}: unexpected answer to {endpoint}", self.base))
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let request = self.agent.request(method, url);
        match &self.auth {
            Some(auth) => request.set("Authorization", auth),
            None => request,
        }
    }

    fn get(&self, endpoint: &str) -> Result<Json, TrackingError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        self.answer(endpoint, self.request("GET", &url).call())
    }

    fn call(&self, endpoint: &str, body: &Json) -> Result<Json, TrackingError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        self.answer(endpoint, self.request("POST", &url).send_json(body))
    }

    /// Uploads `file` to `path` of the artifact store, through the server.
    fn upload(&self, path: &str, file: &std::path::Path) -> Result<(), TrackingError> {
        let bytes = std::fs::read(file)
            .map_err(|e| TrackingError::new(format!("reading {} to upload it: {e}", file.display())))?;
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{path}", self.base);
        let kind = if file.extension().is_some_and(|e| e == "html") { "text/html" } else { "application/octet-stream" };
        self.answer("mlflow-artifacts", self.request("PUT", &url).set("Content-Type", kind).send_bytes(&bytes))
            .map(|_| ())
    }

    /// The JSON answer, or an error with MLflow's `error_code` and message.
    fn answer(&self, endpoint: &str, response: Result<ureq::Response, ureq::Error>) -> Result<Json, TrackingError> {
        match response {
            Ok(r) => {
                let text =
                    r.into_string().map_err(|e| TrackingError::new(format!("{}: {endpoint}: {e}", self.base)))?;
                Ok(serde_json::from_str(&text).unwrap_or(Json::Null))
            }
            Err(ureq::Error::Status(status, r)) => {
                let doc: Json = r.into_string().ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Json::Null);
                let code = doc["error_code"].as_str().map(str::to_string);
                let message = doc["message"].as_str().unwrap_or("").chars().take(300).collect::<String>();
                let mut e = TrackingError::new(format!("{}: {endpoint} answered {status} {message}", self.base));
                e.code = code;
                Err(e)
            }
            Err(ureq::Error::Transport(t)) => {
                Err(TrackingError::new(format!("{}: {endpoint}: {}", self.base, t.kind())).unreachable())
            }
        }
    }
}

/// The artifact-store path of a run's artifacts when the server proxies them
/// (`mlflow-artifacts:/1/RUN/artifacts` or `mlflow-artifacts://host:port/1/RUN/artifacts`).
fn proxied_path(artifact_uri: &str) -> Option<String> {
    let rest = artifact_uri.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    };
    let path = path.trim_matches('/');
    (!path.is_empty()).then(|| path.to_string())
}

fn percent(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxied_artifact_paths_and_credentials_kept_out_of_the_address() {
        assert_eq!(proxied_path("mlflow-artifacts:/1/abc/artifacts").as_deref(), Some("1/abc/artifacts"));
        assert_eq!(proxied_path("mlflow-artifacts://h:5000/1/abc/artifacts").as_deref(), Some("1/abc/artifacts"));
        assert_eq!(proxied_path("file:///tmp/mlruns/1/abc/artifacts"), None);
        let m = Mlflow::new("http://alice:s%40cret@127.0.0.1:5000/prefix/").unwrap();
        assert_eq!(m.base, "http://127.0.0.1:5000/prefix");
        // Unless the environment names other credentials, the URI's are sent as Basic auth.
        if std::env::var_os("MLFLOW_TRACKING_TOKEN").is_none() && std::env::var_os("MLFLOW_TRACKING_USERNAME").is_none()
        {
            let expected = base64::engine::general_purpose::STANDARD.encode("alice:s@cret");
            assert_eq!(m.auth.as_deref(), Some(format!("Basic {expected}").as_str()));
        }
        assert!(Mlflow::new("databricks").is_err());
        assert_eq!(clip("héllo", 2), "h");
    }
}
