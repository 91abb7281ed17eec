//! What a worker's operator lets a submitted plan touch: which environment variables and
//! files it may read (`{env:NAME}`, `[auth]` key sources, `ca_file`), and which hosts it may
//! send traffic to. A plan arrives from whoever can reach the coordinator; without this, a plan
//! could put the worker's secrets in a header and point the target at itself.

use crate::error::CompileError;

use std::net::IpAddr;

use gauntlet_core::plan::Plan;
use gauntlet_core::template::Template;

/// Variables never exposed to a plan, whatever the operator's patterns say: the fleet's own
/// credentials.
const NEVER: [&str; 2] = ["GAUNTLET_TOKEN", "GAUNTLET_SUBMIT_TOKEN"];

/// A worker's access policy for plans.
#[derive(Debug, Clone)]
pub struct Access {
    env: Vec<String>,
    files: Vec<String>,
    targets: Vec<Target>,
}

/// One allowed target: a host name (exact, or `*.suffix`), or an address block.
#[derive(Debug, Clone)]
enum Target {
    Any,
    Host(String),
    Suffix(String),
    Net(IpAddr, u8),
}

impl Default for Access {
    /// What a worker started with no flags allows: no variable, no file, loopback targets only.
    fn default() -> Self {
        Access {
            env: Vec::new(),
            files: Vec::new(),
            targets: vec![
                Target::Net(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)), 8),
                Target::Net(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 128),
                Target::Host("localhost".into()),
            ],
        }
    }
}

impl Access {
    /// Everything but the fleet's credentials: for workers inside `gauntlet run` / `demo`, whose
    /// plan is the user's own.
    pub fn open() -> Access {
        Access {
            env: vec!["*".into()],
            files: vec!["*".into()],
            targets: vec![Target::Any],
        }
    }

    /// A policy from the operator's patterns: variable names and file paths with `*` as a
    /// wildcard; targets as host names, `*.domain`, IP addresses or CIDR blocks (`*` for any).
    pub fn new(env: &[String], files: &[String], targets: &[&str]) -> Result<Access, CompileError> {
        let targets = targets
            .iter()
            .map(|t| parse_target(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Access {
            env: env.to_vec(),
            files: files.to_vec(),
            targets,
        })
    }

    /// Whether a plan may read environment variable `name`.
    pub fn allows_env(&self, name: &str) -> bool {
        !NEVER.contains(&name) && self.env.iter().any(|p| glob(p, name))
    }

    /// Whether a plan may read file `path`: with `*` alone, any; otherwise an absolute path
    /// without `..`, matched component by component (`*` never crosses a `/`).
    pub fn allows_file(&self, path: &str) -> bool {
        // `*` alone: every file (in-process workers, or an operator who said so).
        if self.files.iter().any(|p| p == "*") {
            return true;
        }
        let p = std::path::Path::new(path);
        if !p.is_absolute()
            || p.components().any(|c| {
                matches!(
                    c,
                    std::path::Component::ParentDir | std::path::Component::CurDir
                )
            })
        {
            return false;
        }
        self.files.iter().any(|pattern| path_glob(pattern, path))
    }

    /// Whether traffic may go to `host` (a name or an address, without port).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        self.targets.iter().any(|t| match t {
            Target::Any => true,
            Target::Host(h) => *h == host,
            Target::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
            Target::Net(net, bits) => ip.is_some_and(|ip| in_net(ip, *net, *bits)),
        })
    }

    /// Whether traffic may go to `url`.
    pub fn allows_url(&self, url: &url::Url) -> bool {
        url.host_str().is_some_and(|h| self.allows_host(h))
    }

    /// Checks everything a plan would read or reach; the error names the first refusal and the
    /// flag that would allow it.
    pub fn check(&self, plan: &Plan) -> Result<(), CompileError> {
        for name in env_reads(plan) {
            if !self.allows_env(&name) {
                return Err(CompileError(format!(
                    "this worker does not expose environment variable `{name}` to plans \
                     (its operator allows them with `gauntlet worker --plan-env NAME,...`; the \
                     fleet's tokens never)"
                )));
            }
        }
        let auth = plan.auth.as_ref();
        let files = [
            auth.and_then(|a| a.key.file()),
            plan.target.tls.ca_file.as_deref(),
        ];
        for path in files.into_iter().flatten() {
            let shown = path.display().to_string();
            if !self.allows_file(&shown) {
                return Err(CompileError(format!(
                    "this worker does not let plans read `{shown}` (its operator allows files \
                     with `gauntlet worker --plan-files PATH,...`)"
                )));
            }
        }
        // A `Host` header would reach any virtual host behind an allowed address.
        if let Some(at) = host_header(plan) {
            return Err(CompileError(format!(
                "{at}: a `Host` header is not sent by this worker (it would reach hosts \
                 --allow-target does not list); aim base_url at the host instead"
            )));
        }
        // Every entry of a target list.
        let urls = plan.base_urls().iter().cloned().chain(plan.ws_urls());
        for url in urls {
            let parsed = url::Url::parse(&url).map_err(|e| format!("target `{url}`: {e}"))?;
            if !self.allows_url(&parsed) {
                return Err(CompileError(format!(
                    "this worker does not send traffic to `{}` (its operator allows targets \
                     with `gauntlet worker --allow-target HOST,CIDR,...`)",
                    parsed.host_str().unwrap_or(&url)
                )));
            }
        }
        Ok(())
    }
}

/// Every environment variable a plan reads: its `{env:NAME}` placeholders anywhere, and the
/// `[auth]` key variables.
pub fn env_reads(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = &plan.auth {
        out.extend(a.key.env().map(str::to_owned));
    }
    match serde_json::to_value(plan) {
        Ok(value) => gauntlet_core::plan::each_string(&value, &mut |s| {
            if let Ok(t) = Template::parse(s) {
                out.extend(t.envs().map(str::to_owned));
            }
        }),
        // Fail closed: a plan whose reads cannot be listed reads something unnamed.
        Err(e) => out.push(format!("(unlisted: {e})")),
    }
    out.sort();
    out.dedup();
    out
}

/// Where a plan sets a `Host` (or `:authority`) header, if anywhere.
fn host_header(plan: &Plan) -> Option<String> {
    use gauntlet_core::plan::Step;
    let is_host = |k: &String| {
        let k = k.trim().to_ascii_lowercase();
        k == "host" || k == ":authority"
    };
    if plan.target.headers.keys().any(is_host) {
        return Some("target.headers".into());
    }
    fn walk(steps: &[Step], is_host: &dyn Fn(&String) -> bool) -> bool {
        steps.iter().any(|s| match s {
            Step::WsConnect(c) => c.headers.keys().any(is_host),
            Step::Http(h) => h.headers.keys().any(is_host),
            Step::Repeat(r) => walk(&r.steps, is_host),
            _ => false,
        })
    }
    plan.scenarios
        .iter()
        .find(|s| walk(&s.steps, &is_host))
        .map(|s| format!("scenario `{}`", s.name))
}

fn parse_target(t: &str) -> Result<Target, CompileError> {
    let t = t.trim().to_ascii_lowercase();
    if t == "*" {
        return Ok(Target::Any);
    }
    if let Some((addr, bits)) = t.split_once('/') {
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("--allow-target: `{t}` is not an address block"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("--allow-target: `{t}` has a bad prefix length"))?;
        return Ok(Target::Net(ip, bits));
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(Target::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    if let Some(suffix) = t.strip_prefix('*') {
        if !suffix.starts_with('.') || suffix.len() < 2 {
            return Err(CompileError(format!(
                "--allow-target: `{t}`: a wildcard is `*.domain` or `*` alone"
            )));
        }
        return Ok(Target::Suffix(suffix.to_owned()));
    }
    if t.is_empty() || t.contains(['*', ':', '/', ' ']) {
        return Err(CompileError(format!(
            "--allow-target: `{t}` is not a host name"
        )));
    }
    Ok(Target::Host(t))
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a
            .to_ipv4_mapped()
            .is_some_and(|a4| in_net(IpAddr::V4(a4), net, bits)),
        _ => false,
    }
}

/// A path pattern: both split at `/` and each component matches by [`glob`] (so
/// `/run/secrets/*` allows files directly in that folder only).
fn path_glob(pattern: &str, path: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    a.len() == b.len() && a.iter().zip(&b).all(|(p, t)| glob(p, t))
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use gauntlet_core::plan::Overrides;

    fn plan(extra: &str, target: &str) -> Plan {
        let text = format!(
            "name = \"p\"\n[target]\nbase_url = \"{target}\"\n{extra}\n[load]\nvus = 1\niterations = 1\n[[scenarios]]\nname = \"s\"\nsteps = [ {{ http = {{ path = \"/x\", headers = {{ \"X-Leak\" = \"{{env:JWT_SECRET_KEY}}\" }} }} }} ]\n"
        );
        Plan::from_text("p.toml", &text, &Overrides::default()).unwrap()
    }

    #[test]
    fn globs_and_targets() {
        assert!(glob("STAGING_*", "STAGING_KEY"));
        assert!(!glob("STAGING_*", "PROD_KEY"));
        assert!(glob("*", "anything"));
        let files = Access::new(&[], &["/run/secrets/*".into()], &[]).unwrap();
        assert!(files.allows_file("/run/secrets/jwt.pem"));
        assert!(!files.allows_file("/etc/shadow"));
        assert!(!files.allows_file("/run/secrets/../../dev/zero"));
        assert!(!files.allows_file("/run/secrets/a/b"));
        assert!(!files.allows_file("run/secrets/jwt.pem"));
        let a = Access::new(
            &[],
            &[],
            &["10.0.0.0/8", "*.staging.example.com", "testbed"],
        )
        .unwrap();
        assert!(a.allows_host("10.1.2.3"));
        assert!(!a.allows_host("11.1.2.3"));
        assert!(a.allows_host("api.staging.example.com"));
        assert!(!a.allows_host("staging.example.com.evil.net"));
        assert!(a.allows_host("TESTBED"));
        assert!(!a.allows_host("testbed.evil"));
        assert!(Access::new(&[], &[], &["10.0.0.0/33"]).is_err());
        assert!(Access::new(&[], &[], &["a*b"]).is_err());
        let d = Access::default();
        assert!(d.allows_host("127.0.0.2") && d.allows_host("::1") && d.allows_host("localhost"));
        assert!(!d.allows_host("192.168.1.1"));
    }

    #[test]
    fn a_plan_reading_an_unexposed_variable_or_reaching_an_unlisted_host_is_refused() {
        let p = plan("", "http://127.0.0.1:8080");
        assert_eq!(env_reads(&p), ["JWT_SECRET_KEY"]);
        let e = Access::default().check(&p).unwrap_err();
        assert!(e.contains("environment variable `JWT_SECRET_KEY`"), "{e}");
        let allowed = Access::new(&["JWT_*".into()], &[], &["127.0.0.0/8"]).unwrap();
        assert!(allowed.check(&p).is_ok());
        let e = allowed
            .check(&plan("", "http://attacker.example.net"))
            .unwrap_err();
        assert!(e.contains("`attacker.example.net`"), "{e}");
        // The fleet's token never, even with `*`.
        let all = Access::new(&["*".into()], &[], &["*"]).unwrap();
        assert!(!all.allows_env("GAUNTLET_TOKEN") && all.allows_env("HOME"));
        let e = Access::default()
            .check(&plan(
                "[auth]\nsecret_file = \"/etc/passwd\"",
                "http://127.0.0.1:1",
            ))
            .unwrap_err();
        assert!(
            e.contains("environment variable") || e.contains("`/etc/passwd`"),
            "{e}"
        );
        let files = Access::new(&["JWT_SECRET_KEY".into()], &[], &["*"]).unwrap();
        let e = files
            .check(&plan(
                "[auth]\nsecret_file = \"/etc/passwd\"",
                "http://127.0.0.1:1",
            ))
            .unwrap_err();
        assert!(e.contains("`/etc/passwd`"), "{e}");
        // A Host header would reach any virtual host behind an allowed address.
        let e = all
            .check(&plan(
                "headers = { Host = \"admin.internal\" }",
                "http://127.0.0.1:1",
            ))
            .unwrap_err();
        assert!(e.starts_with("target.headers: a `Host` header"), "{e}");
    }

    #[test]
    fn every_entry_of_a_target_list_is_checked() {
        let allowed = Access::new(&["JWT_*".into()], &[], &["127.0.0.0/8"]).unwrap();
        let listed = |base: &str, ws: &str| {
            let text = format!(
                "name = \"p\"\n[target]\nbase_url = {base}\n{ws}\n[load]\nvus = 1\niterations = 1\n[[scenarios]]\nname = \"s\"\nsteps = [ {{ ws_connect = {{}} }} ]\n"
            );
            Plan::from_text("p.toml", &text, &Overrides::default()).unwrap()
        };
        let good = listed("[\"http://127.0.0.2:1\", \"http://127.0.0.3:1\"]", "");
        assert!(allowed.check(&good).is_ok());
        // The third base URL, then the second WebSocket URL, reach elsewhere.
        let e = allowed
            .check(&listed(
                "[\"http://127.0.0.2:1\", \"http://127.0.0.3:1\", \"http://10.9.9.9:1\"]",
                "",
            ))
            .unwrap_err();
        assert!(e.contains("`10.9.9.9`"), "{e}");
        let e = allowed
            .check(&listed(
                "[\"http://127.0.0.2:1\", \"http://127.0.0.3:1\"]",
                "ws_url = [\"ws://127.0.0.2:1/ws\", \"ws://evil.example:1/ws\"]",
            ))
            .unwrap_err();
        assert!(e.contains("`evil.example`"), "{e}");
    }
}
