//! A plan compiled for execution on this worker: templates parsed with `{env:...}` resolved,
//! regexes built, keys read, metric and check names assigned indices, TLS and HTTP clients
//! made once. Everything a session needs, read-only and shared by every VU.
//!
//! # Layout
//! - this file: [`Program`] and its compilation (scenarios, isolation checks, classifiers,
//!   TLS and HTTP clients);
//! - `step`: [`CompiledStep`] and [`StepKind`], one struct per step kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use gauntlet_core::plan::{self, Plan, Step};
use gauntlet_core::template::Template;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::Minter;
use crate::classify::CompiledClassifier;
use crate::matcher::CompiledMatcher;
use crate::recorder::{CheckId, MetricId};
use crate::render::{JsonTemplate, compile};
use crate::sequence::SequenceCheck;
use crate::sources::SourceAddresses;

mod step;

pub use gauntlet_core::names::{METRIC_CONFIRMATION, METRIC_HANDSHAKE, METRIC_SESSION};
pub use step::{
    CloseStep, CompiledStep, ConnectStep, ExpectStep, Frame, HttpStep, PingStep, RepeatStep,
    SendStep, SequenceStep, StepKind,
};

pub use crate::error::CompileError;

/// The compiled plan.
#[derive(Debug)]
pub struct Program {
    /// The plan as loaded.
    pub plan: Plan,
    /// What this worker lets the plan reach (HTTP URLs and redirects are checked as sent).
    pub access: Arc<crate::access::Access>,
    /// The target's instances (one unless the plan lists several): session `i` uses entry
    /// `i % n`.
    pub endpoints: Vec<Endpoint>,
    /// The source addresses connections are bound to (none: the kernel picks).
    pub sources: SourceAddresses,
    /// Headers of every request and upgrade.
    pub headers: Vec<(String, Template)>,
    /// JWT minting.
    pub minter: Option<Minter>,
    /// Scenarios, in plan order.
    pub scenarios: Vec<CompiledScenario>,
    /// Cumulative scenario weights (for picking one).
    pub cumulative_weights: Vec<u64>,
    /// Isolation checks.
    pub isolation: Vec<CompiledIsolation>,
    /// Plan classifiers.
    pub classifiers: Vec<CompiledClassifier>,
    /// Names of metrics, by [`MetricId`].
    pub metric_names: Vec<String>,
    /// Names of checks, by [`CheckId`].
    pub check_names: Vec<String>,
    /// [`METRIC_HANDSHAKE`].
    pub m_handshake: MetricId,
    /// [`METRIC_CONFIRMATION`].
    pub m_confirmation: MetricId,
    /// [`METRIC_SESSION`].
    pub m_session: MetricId,
    /// TLS for `wss://`.
    pub tls: Arc<rustls::ClientConfig>,
    /// HTTP clients for `http` steps (pooled connections): one per source address, or one.
    pub http: Vec<reqwest::Client>,
    /// tungstenite settings (small read buffer: idle sessions stay cheap).
    pub ws_config: WebSocketConfig,
}

/// One instance of the target: its HTTP base URL and WebSocket URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// HTTP base URL (no trailing slash).
    pub base_url: String,
    /// WebSocket URL.
    pub ws_url: url::Url,
}

/// A compiled scenario.
#[derive(Debug)]
pub struct CompiledScenario {
    /// Name.
    pub name: String,
    /// Variables rendered at session start.
    pub vars: Vec<(String, Template)>,
    /// Steps.
    pub steps: Vec<CompiledStep>,
    /// `session.<scenario>`.
    pub m_session: MetricId,
    /// Number of distinct marks.
    pub marks: usize,
    /// Whether it has a `ws_connect` (anywhere, `repeat` blocks included): its sessions count
    /// as live from their first one; without, from their start.
    pub connects: bool,
}

fn connects(steps: &[CompiledStep]) -> bool {
    steps.iter().any(|s| match &s.kind {
        StepKind::Connect(_) => true,
        StepKind::Repeat(r) => connects(&r.steps),
        _ => false,
    })
}

/// A compiled isolation check.
#[derive(Debug)]
pub struct CompiledIsolation {
    /// Name.
    pub name: String,
    /// Pointer.
    pub pointer: String,
    /// Expected value.
    pub equals: Template,
    /// Check id.
    pub check: CheckId,
}

#[derive(Debug, Default)]
struct Names {
    metrics: Vec<String>,
    checks: Vec<String>,
}

impl Names {
    fn metric(&mut self, name: String) -> MetricId {
        match self.metrics.iter().position(|m| *m == name) {
            Some(i) => i as MetricId,
            None => {
                self.metrics.push(name);
                (self.metrics.len() - 1) as MetricId
            }
        }
    }

    fn check(&mut self, name: String) -> CheckId {
        match self.checks.iter().position(|m| *m == name) {
            Some(i) => i as CheckId,
            None => {
                self.checks.push(name);
                (self.checks.len() - 1) as CheckId
            }
        }
    }
}

impl Program {
    /// Compiles a validated plan.
    pub fn compile(plan: Plan) -> Result<Program, CompileError> {
        Program::compile_for(
            plan,
            crate::access::Access::open(),
            SourceAddresses::default(),
        )
    }

    /// Compiles a validated plan for a worker whose operator allows `access` (checked first:
    /// a plan that reads or reaches what it may not is refused, naming it) and binds its
    /// connections to `sources`.
    pub fn compile_for(
        plan: Plan,
        access: crate::access::Access,
        sources: SourceAddresses,
    ) -> Result<Program, CompileError> {
        access.check(&plan)?;
        let access = Arc::new(access);
        let err = |at: &str, e: &dyn std::fmt::Display| CompileError(format!("{at}: {e}"));
        if plan.base_urls().is_empty() {
            return Err(CompileError("target.base_url: not set".into()));
        }
        let endpoints = plan
            .endpoints()
            .into_iter()
            .map(|(base_url, ws_url)| {
                let parsed = url::Url::parse(&ws_url)
                    .map_err(|e| err("target.ws_url", &format!("`{ws_url}`: {e}")))?;
                Ok(Endpoint {
                    base_url: base_url.trim_end_matches('/').to_owned(),
                    ws_url: parsed,
                })
            })
            .collect::<Result<Vec<_>, CompileError>>()?;
        if endpoints.is_empty() {
            return Err(CompileError("target: no WebSocket URL".into()));
        }
        let headers = header_templates(&plan.target.headers, "target.headers")?;
        let minter = plan.auth.as_ref().map(Minter::new).transpose()?;
        let mut names = Names::default();
        let m_handshake = names.metric(METRIC_HANDSHAKE.into());
        let m_confirmation = names.metric(METRIC_CONFIRMATION.into());
        let m_session = names.metric(METRIC_SESSION.into());
        let mut scenarios = Vec::new();
        for (i, s) in plan.scenarios.iter().enumerate() {
            let at = format!("scenarios[{i}]");
            let vars = s
                .vars
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        compile(v).map_err(|e| err(&format!("{at}.vars.{k}"), &e))?,
                    ))
                })
                .collect::<Result<Vec<_>, CompileError>>()?;
            let m_session = names.metric(format!("session.{}", s.name));
            let mut ctx = ScenarioCtx {
                scenario: &s.name,
                names: &mut names,
                names_used: Default::default(),
                marks: Vec::new(),
            };
            let steps = compile_steps(&s.steps, &format!("{at}.steps"), &mut ctx)?;
            let marks = ctx.marks.len();
            scenarios.push(CompiledScenario {
                name: s.name.clone(),
                vars,
                connects: connects(&steps),
                steps,
                m_session,
                marks,
            });
        }
        let mut acc = 0u64;
        let cumulative_weights = plan
            .scenarios
            .iter()
            .map(|s| {
                acc += u64::from(s.weight);
                acc
            })
            .collect();
        let isolation = plan
            .isolation
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let name = c.name.clone().unwrap_or_else(|| c.pointer.clone());
                Ok(CompiledIsolation {
                    check: names.check(gauntlet_core::checks::isolation_name(c)),
                    name,
                    pointer: c.pointer.clone(),
                    equals: compile(&c.equals)
                        .map_err(|e| err(&format!("isolation[{i}].equals"), &e))?,
                })
            })
            .collect::<Result<Vec<_>, CompileError>>()?;
        let classifiers = plan
            .classifiers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                CompiledClassifier::compile(c).map_err(|e| err(&format!("classifiers[{i}]"), &e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = Arc::new(tls_config(&plan.target.tls)?);
        let local: Vec<Option<std::net::IpAddr>> = if sources.as_slice().is_empty() {
            vec![None]
        } else {
            sources.as_slice().iter().copied().map(Some).collect()
        };
        let http = local
            .into_iter()
            .map(|local| {
                let redirects = Arc::clone(&access);
                reqwest::Client::builder()
                    // A redirect is followed only to a host this worker may reach.
                    .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                        if attempt.previous().len() >= 10 {
                            attempt.error("more than 10 redirects")
                        } else if redirects.allows_url(attempt.url()) {
                            attempt.follow()
                        } else {
                            let host = attempt.url().host_str().unwrap_or("?").to_owned();
                            attempt.error(format!(
                                "redirect to `{host}`, which this worker does not send traffic to (--allow-target)"
                            ))
                        }
                    }))
                    .use_preconfigured_tls((*tls).clone())
                    .connect_timeout(plan.target.connect_timeout)
                    .local_address(local)
                    .build()
                    .map_err(|e| CompileError(format!("cannot build the HTTP client: {e}")))
            })
            .collect::<Result<Vec<_>, CompileError>>()?;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(crate::session::READ_CHUNK)
            .write_buffer_size(0)
            .max_message_size(Some(plan.target.max_message_bytes as usize))
            .max_frame_size(Some(plan.target.max_message_bytes as usize));
        Ok(Program {
            access,
            endpoints,
            sources,
            headers,
            minter,
            scenarios,
            cumulative_weights,
            isolation,
            classifiers,
            metric_names: names.metrics,
            check_names: names.checks,
            m_handshake,
            m_confirmation,
            m_session,
            tls,
            http,
            ws_config,
            plan,
        })
    }

    /// The target instance of session `route` (the VU's number in the closed model, the
    /// arrival's in the open one): entry `route % n`, the same whichever worker runs it.
    pub fn endpoint(&self, route: u64) -> &Endpoint {
        &self.endpoints[(route % self.endpoints.len() as u64) as usize]
    }

    /// The HTTP client of session `route` (bound to its source address, if any).
    pub fn http_client(&self, route: u64) -> &reqwest::Client {
        &self.http[(route % self.http.len() as u64) as usize]
    }

    /// The scenario for a draw `r` in `[0, total weight)`.
    pub fn pick_scenario(&self, r: u64) -> usize {
        let total = self.cumulative_weights.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let r = r % total;
        self.cumulative_weights
            .iter()
            .position(|c| r < *c)
            .unwrap_or(0)
    }
}

struct ScenarioCtx<'a> {
    scenario: &'a str,
    names: &'a mut Names,
    names_used: gauntlet_core::checks::UniqueNames,
    marks: Vec<String>,
}

impl ScenarioCtx<'_> {
    fn mark(&mut self, name: &str) -> usize {
        match self.marks.iter().position(|m| m == name) {
            Some(i) => i,
            None => {
                self.marks.push(name.to_owned());
                self.marks.len() - 1
            }
        }
    }
}

fn templates(
    map: &BTreeMap<String, String>,
    at: &str,
) -> Result<Vec<(String, Template)>, CompileError> {
    map.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                compile(v).map_err(|e| CompileError(format!("{at}.{k}: {e}")))?,
            ))
        })
        .collect()
}

/// [`templates`] of HTTP headers: each name must be one HTTP allows (the requests write them
/// as they are).
fn header_templates(
    map: &BTreeMap<String, String>,
    at: &str,
) -> Result<Vec<(String, Template)>, CompileError> {
    if let Some(name) = map
        .keys()
        .find(|k| reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err())
    {
        return Err(CompileError(format!(
            "{at}.{name}: `{name}` is not a valid HTTP header name"
        )));
    }
    templates(map, at)
}

fn matchers(list: &[plan::Matcher], at: &str) -> Result<Vec<CompiledMatcher>, CompileError> {
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            CompiledMatcher::compile(m).map_err(|e| CompileError(format!("{at}[{i}]: {e}")))
        })
        .collect()
}

fn captures(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn compile_steps(
    steps: &[Step],
    at: &str,
    ctx: &mut ScenarioCtx<'_>,
) -> Result<Vec<CompiledStep>, CompileError> {
    let mut out = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{at}[{i}].{}", step.kind());
        let name = ctx
            .names_used
            .unique(gauntlet_core::checks::step_base_name(step));
        let metric = ctx.names.metric(format!("step.{}.{name}", ctx.scenario));
        let check = ctx.names.check(format!("{}/{name}", ctx.scenario));
        let e = |e: CompileError| CompileError(format!("{at}: {e}"));
        let kind = match step {
            Step::WsConnect(s) => StepKind::Connect(ConnectStep {
                path: s.path.clone(),
                query: templates(&s.query, &format!("{at}.query"))?,
                headers: header_templates(&s.headers, &format!("{at}.headers"))?,
                auth: s.auth.unwrap_or(true),
                confirmation: match &s.outcome {
                    plan::ConnectOutcome::Open { confirmation } => {
                        matchers(confirmation, &format!("{at}.confirmation"))?
                    }
                    plan::ConnectOutcome::Refused(_) => Vec::new(),
                },
                rejection: match &s.outcome {
                    plan::ConnectOutcome::Refused(r) => Some(r.clone()),
                    plan::ConnectOutcome::Open { .. } => None,
                },
                timeout: s.timeout,
            }),
            Step::WsSend(s) => StepKind::Send(SendStep {
                frame: match &s.payload {
                    plan::Payload::Json(json) => {
                        Frame::Json(JsonTemplate::compile(json).map_err(e)?)
                    }
                    plan::Payload::Text(text) => Frame::Text(compile(text).map_err(e)?),
                },
                mark: ctx.mark(s.mark.as_deref().unwrap_or("send")),
            }),
            Step::WsExpect(s) => {
                let mut list = matchers(&s.matchers, &format!("{at}.match"))?;
                if let Some(t) = &s.frame_type {
                    list.insert(0, CompiledMatcher::equals("/type", t));
                }
                StepKind::Expect(ExpectStep {
                    matchers: list,
                    timeout: s.timeout,
                    since: s.since.as_deref().map(|m| ctx.mark(m)),
                    capture: captures(&s.capture),
                    event_metric: ctx.names.metric(format!("event.{}.{name}", ctx.scenario)),
                })
            }
            Step::WsExpectSequence(s) => {
                let check = SequenceCheck::new(s);
                let event_metrics = check
                    .types
                    .iter()
                    .map(|t| ctx.names.metric(format!("event.{}.{t}", ctx.scenario)))
                    .collect();
                StepKind::Sequence(SequenceStep {
                    check,
                    type_pointer: s.type_pointer.clone(),
                    timeout: s.timeout,
                    gap_timeout: s.gap_timeout,
                    since: s.since.as_deref().map(|m| ctx.mark(m)),
                    capture: captures(&s.capture),
                    event_metrics,
                })
            }
            Step::WsPing(s) => StepKind::Ping(PingStep { timeout: s.timeout }),
            Step::WsClose(s) => StepKind::Close(CloseStep {
                code: s.code,
                reason: s.reason.clone(),
                timeout: s.timeout,
            }),
            Step::Http(s) => StepKind::Http(Box::new(HttpStep {
                method: reqwest::Method::from_bytes(s.method.as_bytes()).map_err(|_| {
                    CompileError(format!("{at}.method: `{}` is not a method", s.method))
                })?,
                path: compile(&s.path).map_err(e)?,
                headers: header_templates(&s.headers, &format!("{at}.headers"))?,
                auth: s.auth,
                json: match &s.body {
                    Some(plan::Payload::Json(json)) => {
                        Some(JsonTemplate::compile(json).map_err(e)?)
                    }
                    _ => None,
                },
                body: match &s.body {
                    Some(plan::Payload::Text(text)) => Some(compile(text).map_err(e)?),
                    _ => None,
                },
                expect_status: s.expect_status.clone(),
                expect_json: s.expect_json,
                matchers: matchers(&s.matchers, &format!("{at}.match"))?,
                capture: captures(&s.capture),
                timeout: s.timeout,
            })),
            Step::Sleep(s) => StepKind::Sleep(s.duration),
            Step::Repeat(s) => StepKind::Repeat(RepeatStep {
                count: s.count,
                steps: compile_steps(&s.steps, &format!("{at}.steps"), ctx)?,
            }),
        };
        out.push(CompiledStep {
            name,
            metric,
            check,
            kind,
        });
    }
    Ok(out)
}

fn tls_config(tls: &plan::Tls) -> Result<rustls::ClientConfig, CompileError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CompileError(format!("TLS: {e}")))?;
    if tls.insecure_skip_verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &tls.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| CompileError(format!("target.tls.ca_file: {}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                CompileError(format!("target.tls.ca_file: {}: {e}", path.display()))
            })?;
            roots.add(cert).map_err(|e| {
                CompileError(format!("target.tls.ca_file: {}: {e}", path.display()))
            })?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `target.tls.insecure_skip_verify`: trusts any certificate (signatures are still checked).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The coordinator lists a plan's checks from `gauntlet_core::checks::declared`; the
    /// recorder names them here: both must name the same checks for every example plan.
    #[test]
    fn declared_checks_are_the_recorded_ones() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../plans");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let plan = Plan::load(&path, &plan::Overrides::default()).unwrap();
            let declared: Vec<String> = gauntlet_core::checks::declared(&plan)
                .into_iter()
                .map(|c| c.name)
                .collect();
            let acting = count_acting(
                &plan
                    .scenarios
                    .iter()
                    .flat_map(|s| &s.steps)
                    .collect::<Vec<_>>(),
            );
            // Names do not depend on the keys, which this test does not have.
            let program = Program::compile(Plan { auth: None, ..plan }).unwrap();
            let recorded = &program.check_names;
            for d in &declared {
                assert!(
                    recorded.contains(d),
                    "{}: {d} is not recorded",
                    path.display()
                );
            }
            // The recorder also names the steps that only act (sends, closes...), never checked.
            assert_eq!(
                recorded.len(),
                declared.len() + acting,
                "{}",
                path.display()
            );
            seen += 1;
        }
        assert!(seen >= 5, "the example plans were read");
    }

    /// The coordinator admits only snapshots whose names are in the plan's vocabulary: the
    /// recorder must name nothing else, and the vocabulary nothing it never records.
    #[test]
    fn recorded_names_are_the_vocabulary() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../plans");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let plan = Plan::load(&path, &plan::Overrides::default()).unwrap();
            let vocabulary = gauntlet_core::names::Vocabulary::of(&plan);
            let program = Program::compile(Plan { auth: None, ..plan }).unwrap();
            let metrics: std::collections::BTreeSet<String> =
                program.metric_names.iter().cloned().collect();
            let checks: std::collections::BTreeSet<String> =
                program.check_names.iter().cloned().collect();
            assert_eq!(metrics, vocabulary.metrics, "{}", path.display());
            assert_eq!(checks, vocabulary.checks, "{}", path.display());
            for s in &program.scenarios {
                let mut steps = Vec::new();
                fn walk<'a>(steps: &'a [CompiledStep], out: &mut Vec<&'a str>) {
                    for s in steps {
                        out.push(&s.name);
                        if let StepKind::Repeat(r) = &s.kind {
                            walk(&r.steps, out);
                        }
                    }
                }
                walk(&s.steps, &mut steps);
                for step in steps {
                    assert!(
                        vocabulary.has_step(&s.name, step),
                        "{}: {step}",
                        path.display()
                    );
                }
            }
        }
    }

    /// A plan with one `ws_connect` and one `http` step, after `edit`.
    fn with_headers(target: &str, edit: impl FnOnce(&mut Plan)) -> Result<Plan, String> {
        let text = format!(
            "name = \"h\"\n[target]\nbase_url = \"http://127.0.0.1:9\"\n{target}\n\
             [load]\nvus = 1\niterations = 1\n[[scenarios]]\nname = \"s\"\n\
             steps = [{{ ws_connect = {{}} }}, {{ http = {{ path = \"/\" }} }}]\n"
        );
        let mut plan = Plan::from_text("h.toml", &text, &plan::Overrides::default())
            .map_err(|e| e.to_string())?;
        edit(&mut plan);
        Ok(plan)
    }

    /// Plan validation (`gauntlet validate`, a worker's load) and `http::HeaderName` accept the
    /// same header names.
    #[test]
    fn validation_accepts_the_header_names_http_does() {
        for c in (0u8..128).map(char::from).chain(['\u{e9}']) {
            let name = format!("x{c}y");
            let toml_name = serde_json::to_string(&name).unwrap();
            let validated = with_headers(&format!("headers = {{ {toml_name} = \"1\" }}"), |_| {});
            let http = reqwest::header::HeaderName::from_bytes(name.as_bytes());
            assert_eq!(validated.is_ok(), http.is_ok(), "{c:?}: {validated:?}");
        }
    }

    /// A plan built in code, not loaded, still cannot send a header name HTTP forbids.
    #[test]
    fn header_names_http_forbids_fail_the_plan_where_they_are() {
        let compiled = |edit: &dyn Fn(&mut Plan)| {
            let plan = with_headers("headers = { \"X-Ok\" = \"1\" }", edit).unwrap();
            Program::compile(plan).map(|_| ()).map_err(|e| e.0)
        };
        assert_eq!(compiled(&|_| {}), Ok(()));
        let e = compiled(&|p| {
            p.target.headers.insert("Bad Name".into(), "1".into());
        });
        assert_eq!(
            e,
            Err("target.headers.Bad Name: `Bad Name` is not a valid HTTP header name".into())
        );
        let step = |i: usize, name: &'static str| {
            move |p: &mut Plan| match &mut p.scenarios[0].steps[i] {
                Step::WsConnect(s) => {
                    s.headers.insert(name.into(), "1".into());
                }
                Step::Http(s) => {
                    s.headers.insert(name.into(), "1".into());
                }
                _ => unreachable!(),
            }
        };
        let e = compiled(&step(0, "x:y")).unwrap_err();
        assert!(
            e.contains("headers.x:y: `x:y` is not a valid HTTP header name"),
            "{e}"
        );
        let e = compiled(&step(1, "")).unwrap_err();
        assert!(
            e.contains("headers.: `` is not a valid HTTP header name"),
            "{e}"
        );
    }

    /// Steps, nested ones included, that check nothing.
    fn count_acting(steps: &[&Step]) -> usize {
        steps
            .iter()
            .map(|s| {
                let nested = match s {
                    Step::Repeat(r) => count_acting(&r.steps.iter().collect::<Vec<_>>()),
                    _ => 0,
                };
                nested + usize::from(!gauntlet_core::checks::checks_something(s))
            })
            .sum()
    }
}
