//! The `http` step: one request to the target, its status, body checks and captures.

use super::{Fatal, Session, unrendered};
use crate::classify::Symptom;
use crate::json::Json;
use crate::program::{CompiledStep, HttpStep};

impl Session<'_> {
    pub(super) async fn http(&mut self, step: &CompiledStep, h: &HttpStep) -> Result<(), Fatal> {
        let Some(path) = self.render(&h.path) else {
            self.fail(&step.name, unrendered("path"));
            return Err(Fatal);
        };
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path
        } else {
            format!("{}{path}", self.p.endpoint(self.vu.route).base_url)
        };
        // A rendered URL (a capture can come from the target) reaches only allowed hosts.
        if let Ok(parsed) = url::Url::parse(&url)
            && !self.p.access.allows_url(&parsed)
        {
            self.vu.rec.check(step.check, false);
            self.fail(
                &step.name,
                Symptom::Protocol(format!(
                    "`{}` is not a target this worker sends traffic to (--allow-target)",
                    parsed.host_str().unwrap_or("?")
                )),
            );
            return Err(Fatal);
        }
        let mut req = self
            .p
            .http_client(self.vu.route)
            .request(h.method.clone(), &url)
            .timeout(h.timeout);
        for (k, t) in self.p.headers.iter().chain(&h.headers) {
            match self.render(t) {
                Some(v) => req = req.header(k.as_str(), v),
                None => {
                    self.fail(&step.name, unrendered(k));
                    return Err(Fatal);
                }
            }
        }
        if h.auth && !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        let mut sent = 0u64;
        if let Some(json) = &h.json {
            let Some(body) = self.with_ctx(|ctx, rng| json.render_text(ctx, rng)) else {
                self.fail(&step.name, unrendered("json"));
                return Err(Fatal);
            };
            sent = body.len() as u64;
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        } else if let Some(body) = &h.body {
            let Some(body) = self.render(body) else {
                self.fail(&step.name, unrendered("body"));
                return Err(Fatal);
            };
            sent = body.len() as u64;
            req = req.body(body);
        }
        self.vu.rec.counters.bytes_sent += sent;
        // The target is the address the response came from, or the URL's when none came.
        if let Ok(parsed) = url::Url::parse(&url) {
            self.target = Some(format!(
                "{}:{}",
                parsed.host_str().unwrap_or_default(),
                parsed.port_or_known_default().unwrap_or(80)
            ));
        }
        let response = match req.send().await {
            Ok(r) => {
                if let Some(addr) = r.remote_addr() {
                    self.target = Some(addr.to_string());
                }
                r
            }
            Err(e) => {
                self.vu.rec.check(step.check, false);
                let symptom = if e.is_timeout() {
                    Symptom::Timeout(format!("{}: response", step.name))
                } else if e.is_connect() {
                    Symptom::ConnectRefused(format!("{url}: {}", error_chain(&e)))
                } else {
                    Symptom::Protocol(format!("{url}: {}", error_chain(&e)))
                };
                self.fail(&step.name, symptom);
                return Ok(());
            }
        };
        let status = response.status().as_u16();
        // Read in chunks, never past the plan's cap (an endless or huge body is the target's
        // problem, not the worker's memory).
        let cap = self.p.plan.target.max_response_bytes;
        let mut response = response;
        let mut body: Vec<u8> = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > cap {
                        self.vu.rec.counters.bytes_received += body.len() as u64;
                        self.vu.rec.check(step.check, false);
                        self.fail(
                            &step.name,
                            Symptom::TooLarge(format!(
                                "{url}: HTTP {status} body over target.max_response_bytes = {cap}"
                            )),
                        );
                        return Ok(());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    self.vu.rec.check(step.check, false);
                    let symptom = if e.is_timeout() {
                        Symptom::Timeout(format!("{}: body", step.name))
                    } else {
                        Symptom::Reset(format!("{url}: {}", error_chain(&e)))
                    };
                    self.fail(&step.name, symptom);
                    return Ok(());
                }
            }
        }
        self.vu.rec.counters.bytes_received += body.len() as u64;
        let text = String::from_utf8_lossy(&body);
        let status_ok = if h.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            h.expect_status.contains(&status)
        };
        if !status_ok {
            self.vu.rec.check(step.check, false);
            self.fail(
                &step.name,
                Symptom::HttpStatus {
                    status,
                    body: text.into_owned(),
                },
            );
            return Ok(());
        }
        let needs_json = h.expect_json || !h.matchers.is_empty() || !h.capture.is_empty();
        let json: Option<Json<'_>> = if needs_json {
            Json::parse_slice(&body)
        } else {
            None
        };
        if needs_json && json.is_none() {
            self.vu.rec.check(step.check, false);
            self.fail(
                &step.name,
                Symptom::CheckFailed {
                    name: format!("{}: JSON body", step.name),
                    sample: format!("HTTP {status} {text}"),
                },
            );
            return Ok(());
        }
        if let Some(json) = json {
            let failed = self.with_ctx(|ctx, rng| {
                h.matchers
                    .iter()
                    .find(|m| !m.matches(&json, ctx, rng))
                    .map(|m| m.describe())
            });
            if let Some(what) = failed {
                self.vu.rec.check(step.check, false);
                self.fail(
                    &step.name,
                    Symptom::CheckFailed {
                        name: format!("{}: {what}", step.name),
                        sample: format!("HTTP {status} {text}"),
                    },
                );
                return Ok(());
            }
            self.capture(step, &h.capture, &json);
        }
        self.vu.rec.check(step.check, true);
        Ok(())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
