//! The gRPC services over the coordinator: WorkerService (registration and each worker's
//! Session stream) and ControlService (submit, watch, cancel and inspect runs). Errors become
//! `tonic::Status` here and nowhere else.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use gauntlet_core::plan::{LoadOverride, Overrides, Plan};

/// The largest load override a submitter may send (a few flags; 1,000 stages fit).
const MAX_LOAD_JSON: usize = 64 * 1024;
use gauntlet_proto::PROTOCOL_VERSION;
use gauntlet_proto::v1::{self, coordinator_message, worker_message};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Coordinator;
use crate::run::intake::{Reason, Refusal};
use crate::run::{Run, RunRequest};

/// A peer's id, cut for a message.
fn cut(id: &str) -> String {
    gauntlet_core::metrics::cut(id.to_owned(), 80)
}

/// Messages queued to one worker; when full, the worker is not reading and messages are
/// dropped (acks are resent implicitly by later acks; its heartbeat timeout decides the rest).
const OUTBOX: usize = 256;

/// WorkerService.
#[derive(Debug)]
pub struct Workers(pub Coordinator);

type CoordinatorStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl v1::worker_service_server::WorkerService for Workers {
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let req = request.into_inner();
        if req.protocol != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "worker `{}` speaks protocol {} (gauntlet {}), this coordinator speaks {PROTOCOL_VERSION} \
                 (gauntlet {}): run the same gauntlet version on both",
                req.name,
                req.protocol,
                req.version,
                env!("CARGO_PKG_VERSION")
            )));
        }
        let (id, session_key) = self.0.registry.register(&req).map_err(|e| match e {
            crate::registry::RegisterError::Full => Status::resource_exhausted(e.to_string()),
            crate::registry::RegisterError::Capacity(_) => Status::invalid_argument(e.to_string()),
        })?;
        tracing::info!(worker = %id, name = %req.name, capacity = req.capacity, "worker registered");
        let config = self.0.config;
        Ok(Response::new(v1::RegisterResponse {
            worker_id: id,
            session_key,
            lease_ms: config.heartbeat_timeout.as_millis() as u64,
            heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u64,
        }))
    }

    type SessionStream = CoordinatorStream;

    async fn session(
        &self,
        request: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the Session stream ended before its Hello"))?;
        let Some(worker_message::Kind::Hello(hello)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first Session message must be Hello",
            ));
        };
        let id = hello.worker_id;
        let (tx, rx) = mpsc::channel(OUTBOX);
        let stream = self
            .0
            .registry
            .attach(&id, &hello.session_key, tx.clone())
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "unknown worker `{id}`, or not its session key: register first"
                ))
            })?;
        let coordinator = self.0.clone();
        tokio::spawn(async move {
            while let Some(next) = inbound.next().await {
                let Ok(msg) = next else { break };
                coordinator.registry.seen(&id);
                match msg.kind {
                    Some(worker_message::Kind::Snapshot(snapshot)) => {
                        let admitted = match coordinator.run(&snapshot.run_id) {
                            Some(run) => run.on_snapshot(&coordinator, &id, &snapshot),
                            None => {
                                let refusal = Refusal {
                                    reason: Reason::UnknownRun,
                                    detail: format!(
                                        "no run `{}` on this coordinator",
                                        cut(&snapshot.run_id)
                                    ),
                                };
                                coordinator.rejected.count(refusal.reason);
                                tracing::warn!(worker = %id, seq = snapshot.seq, "snapshot refused: no such run");
                                Err(refusal)
                            }
                        };
                        let kind = match admitted {
                            Ok(()) => coordinator_message::Kind::Ack(v1::Ack {
                                run_id: snapshot.run_id,
                                seq: snapshot.seq,
                                done_first_seq: 0,
                            }),
                            Err(refusal) => coordinator_message::Kind::Refused(v1::Refused {
                                run_id: snapshot.run_id,
                                seq: snapshot.seq,
                                reason: refusal.reason.as_str().to_owned(),
                                detail: refusal.detail,
                            }),
                        };
                        // A full outbox: the worker is not reading; it resends what is not
                        // acknowledged.
                        let _ = tx.try_send(v1::CoordinatorMessage { kind: Some(kind) });
                    }
                    Some(worker_message::Kind::Leaving(leaving)) => {
                        if let Some(run) = coordinator.run(&leaving.run_id) {
                            run.on_leaving(&id, &leaving);
                        }
                    }
                    Some(worker_message::Kind::Done(done)) => {
                        if let Some(run) = coordinator.run(&done.run_id) {
                            run.on_done(&id, &done);
                        }
                        // Known run or not, the worker may forget it (a full outbox: it
                        // resends the Done after its next reconnect).
                        let ack = v1::Ack {
                            run_id: done.run_id,
                            seq: 0,
                            done_first_seq: done.first_seq,
                        };
                        let kind = Some(coordinator_message::Kind::Ack(ack));
                        let _ = tx.try_send(v1::CoordinatorMessage { kind });
                    }
                    Some(worker_message::Kind::Heartbeat(beat)) => {
                        for p in &beat.progress {
                            if let Some(run) = coordinator.run(&p.run_id) {
                                run.on_progress(&coordinator, &id, p);
                            }
                        }
                    }
                    Some(worker_message::Kind::Hello(_)) | None => {}
                }
            }
            coordinator.registry.detach(&id, stream);
            tracing::info!(worker = %id, "worker stream closed");
        });
        let out = ReceiverStream::new(rx).map(Ok::<_, Status>);
        Ok(Response::new(Box::pin(out)))
    }
}

/// ControlService.
#[derive(Debug)]
pub struct Control(pub Coordinator);

type ProgressStream = Pin<Box<dyn Stream<Item = Result<v1::RunProgress, Status>> + Send>>;

#[tonic::async_trait]
impl v1::control_service_server::ControlService for Control {
    async fn submit_run(
        &self,
        request: Request<v1::SubmitRunRequest>,
    ) -> Result<Response<v1::SubmitRunResponse>, Status> {
        let req = request.into_inner();
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let load = if req.load_json.is_empty() {
            LoadOverride::default()
        } else if req.load_json.len() > MAX_LOAD_JSON {
            return Err(Status::invalid_argument(format!(
                "load_json: {} bytes, more than the {MAX_LOAD_JSON} a load override may have",
                req.load_json.len()
            )));
        } else {
            serde_json::from_str(&req.load_json)
                .map_err(|e| Status::invalid_argument(format!("load_json: {e}")))?
        };
        let vars = if req.vars_json.is_empty() {
            Default::default()
        } else if req.vars_json.len() > MAX_LOAD_JSON {
            return Err(Status::invalid_argument(format!(
                "vars_json: {} bytes, more than the {MAX_LOAD_JSON} plan variables may have",
                req.vars_json.len()
            )));
        } else {
            let vars: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&req.vars_json)
                    .map_err(|e| Status::invalid_argument(format!("vars_json: {e}")))?;
            for (name, value) in &vars {
                gauntlet_core::plan::parse_var(&format!("{name}={value}"))
                    .map_err(|e| Status::invalid_argument(format!("vars_json: {e}")))?;
            }
            vars
        };
        let overrides = Overrides {
            target: non_empty(&req.target),
            ws_target: non_empty(&req.ws_target),
            load,
            vars,
        };
        let file = if req.plan_file.is_empty() {
            "plan.toml"
        } else {
            req.plan_file.as_str()
        };
        let plan = Plan::from_text(file, &req.plan_toml, &overrides)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let run = Run::start(
            &self.0,
            RunRequest {
                plan_toml: req.plan_toml,
                plan_file: file.to_owned(),
                min_workers: req.min_workers,
                min_workers_timeout: std::time::Duration::from_millis(req.min_workers_timeout_ms),
            },
            plan,
        );
        Ok(Response::new(v1::SubmitRunResponse {
            run_id: run.id.clone(),
        }))
    }

    type WatchRunStream = ProgressStream;

    async fn watch_run(
        &self,
        request: Request<v1::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let id = request.into_inner().run_id;
        let run = self
            .0
            .run(&id)
            .ok_or_else(|| Status::not_found(format!("no run `{id}`")))?;
        let mut rx = run.watch();
        // Bounded: a slow watcher only ever misses intermediate progress, never the end.
        let (tx, out) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let progress = rx.borrow_and_update().clone();
                let finished = progress.phase() == v1::RunPhase::Finished;
                if tx.send(Ok(progress)).await.is_err() || finished {
                    break;
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn cancel_run(
        &self,
        request: Request<v1::CancelRunRequest>,
    ) -> Result<Response<v1::CancelRunResponse>, Status> {
        let id = request.into_inner().run_id;
        let run = self
            .0
            .run(&id)
            .ok_or_else(|| Status::not_found(format!("no run `{id}`")))?;
        run.cancel();
        Ok(Response::new(v1::CancelRunResponse {}))
    }

    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::GetRunResponse>, Status> {
        let id = request.into_inner().run_id;
        let run = self
            .0
            .run(&id)
            .ok_or_else(|| Status::not_found(format!("no run `{id}`")))?;
        let report_json = run
            .report()
            .map(|r| serde_json::to_string_pretty(&r))
            .transpose()
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or_default();
        Ok(Response::new(v1::GetRunResponse {
            phase: crate::run::phase_to_proto(run.phase()).into(),
            report_json,
        }))
    }

    async fn list_runs(
        &self,
        _request: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let runs = self
            .0
            .runs()
            .iter()
            .map(|r| v1::RunSummary {
                run_id: r.id.clone(),
                plan: r.plan.name.clone(),
                phase: crate::run::phase_to_proto(r.phase()).into(),
                verdict: r
                    .report()
                    .map_or(v1::Verdict::Unspecified, |rep| match rep.verdict {
                        gauntlet_core::words::Verdict::Pass => v1::Verdict::Pass,
                        gauntlet_core::words::Verdict::Fail => v1::Verdict::Fail,
                        gauntlet_core::words::Verdict::Error => v1::Verdict::Error,
                    })
                    .into(),
            })
            .collect();
        Ok(Response::new(v1::ListRunsResponse { runs }))
    }

    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let now = Instant::now();
        let workers = self
            .0
            .registry
            .all()
            .into_iter()
            .map(|w| v1::WorkerInfo {
                worker_id: w.id,
                name: w.name,
                capacity: w.capacity,
                version: w.version,
                labels: w.labels.into_iter().collect(),
                last_seen_ms_ago: now.duration_since(w.last_seen).as_millis() as u64,
            })
            .collect();
        Ok(Response::new(v1::ListWorkersResponse { workers }))
    }
}
