//! An etcd v3 client over etcd's JSON gateway (`/v3/kv/...`, etcd 3.4 and later): plain
//! blocking HTTP with base64 keys and values. Why not a gRPC crate: those bring an async
//! runtime into a synchronous daemon and CLI for what are a handful of calls; the gateway
//! speaks the same API. Endpoints are tried in order until one answers.

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Etcd {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    /// For watch streams: no limit on the whole answer, only on the silence between reads.
    streams: ureq::Agent,
    /// TLS without a client certificate: a handshake etcd cuts short most likely asked for
    /// one, and the error says so.
    no_client_cert: bool,
}

/// How long a watch stream may stay silent before [`Watch::wait`] says so: the caller's
/// chance to look at its own state, and the bound on how long a partition goes unnoticed.
pub const WATCH_IDLE: Duration = Duration::from_secs(3);

/// What a watch stream says next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Keys under the prefix changed; the store's revision with the change.
    Changed(i64),
    /// Nothing for [`WATCH_IDLE`]; the stream is closed and is to be opened again from the
    /// last revision seen.
    Idle,
    /// The revision to resume from was compacted away: list again, then watch from there.
    Compacted(i64),
}

/// An open watch on a prefix (`/v3/watch` of the JSON gateway: one JSON object per
/// response, streamed for as long as the watch lasts).
pub struct Watch {
    stream: serde_json::StreamDeserializer<'static, serde_json::de::IoRead<Box<dyn std::io::Read + Send>>, Value>,
    /// Changes to keys under this are not reported.
    ignore: Option<String>,
    /// When not empty, only changes to keys under one of these are reported.
    within: Vec<String>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Watch {
    /// The same watch, quiet about changes to keys under `prefix`.
    pub fn ignoring(mut self, prefix: &str) -> Watch {
        self.ignore = Some(prefix.to_string());
        self
    }

    /// The same watch, reporting changes only to keys under one of `prefixes` (a watch on
    /// a wider prefix, for several narrower ones over one stream).
    pub fn within(mut self, prefixes: &[&str]) -> Watch {
        self.within = prefixes.iter().map(|p| p.to_string()).collect();
        self
    }

    pub fn wait(&mut self) -> anyhow::Result<WatchEvent> {
        loop {
            let v = match self.stream.next() {
                None => bail!("etcd closed the watch"),
                Some(Ok(v)) => v,
                Some(Err(e)) if e.is_io() => {
                    let timed_out =
                        std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>()).is_some_and(
                            |io| matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock),
                        );
                    if timed_out || e.to_string().contains("timed out") {
                        return Ok(WatchEvent::Idle);
                    }
                    return Err(anyhow::Error::new(e).context("reading the watch"));
                }
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("a watch answer that does not read")),
            };
            if let Some(err) = v.get("error") {
                bail!("etcd ended the watch: {err}");
            }
            let r = &v["result"];
            let compacted = int(&r["compact_revision"]);
            if compacted > 0 {
                return Ok(WatchEvent::Compacted(compacted));
            }
            if r["canceled"].as_bool() == Some(true) {
                bail!("etcd canceled the watch: {}", r["cancel_reason"]);
            }
            if r["events"].as_array().is_some_and(|e| concerns(e, &self.within, self.ignore.as_deref())) {
                return Ok(WatchEvent::Changed(int(&r["header"]["revision"])));
            }
            // The answer that the watch was created, or a progress note: read on.
        }
    }
}

/// Whether the events of a watch answer change a key not under `ignore`.
fn concerns(events: &[Value], within: &[String], ignore: Option<&str>) -> bool {
    events.iter().any(|e| {
        let key = B64.decode(e["kv"]["key"].as_str().unwrap_or("")).unwrap_or_default();
        (within.is_empty() || within.iter().any(|w| key.starts_with(w.as_bytes())))
            && ignore.is_none_or(|i| !key.starts_with(i.as_bytes()))
    })
}

/// One key as read: its value and the revision it was last changed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// The end of the range of keys starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// No endpoint answered: etcd is down or out of reach, which may pass (a CNI runtime is told
/// to try again later).
#[derive(Debug)]
pub struct Unreachable(String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no etcd endpoint answers: {}", self.0)
    }
}

impl std::error::Error for Unreachable {}

/// What went wrong at the bottom of a transport error ("Connection refused (os error 111)",
/// "timed out reading response"): ureq's own text repeats its kind at every layer and the URL.
fn root_cause(err: &ureq::Error) -> String {
    let mut e: &dyn std::error::Error = err;
    while let Some(inner) = e.source() {
        e = inner;
    }
    e.to_string()
}

fn int(v: &Value) -> i64 {
    // int64 fields arrive as strings in the gateway's JSON.
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_i64()).unwrap_or(0)
}

/// TLS to etcd: the CA that signed etcd's certificate, and this client's certificate and
/// key where etcd asks clients for one (`--client-cert-auth`).
pub use nodeapi::config::EtcdTls as Tls;

/// The rustls client configuration: etcd's certificate checked against the CA alone (a
/// private CA is what etcd clusters use; no system roots), and the client's certificate
/// offered where one is given.
fn client_config(tls: &Tls) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let Some(ca) = &tls.ca_cert else {
        bail!("an https:// etcd endpoint needs the CA that signed etcd's certificate (--etcd-ca-cert-file)");
    };
    let certs = |path: &std::path::Path, what: &str| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))?;
        if certs.is_empty() {
            bail!("{what} {}: no PEM certificate in it", path.display());
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca, "etcd CA certificate")? {
        roots.add(c).map_err(|e| anyhow::anyhow!("etcd CA certificate {}: {e}", ca.display()))?;
    }
    // ring, as ureq builds rustls: the other provider, aws-lc-rs (which adds post-quantum
    // key exchange, hence the deprecation), is a large C build for a handful of requests.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "etcd client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| anyhow::anyhow!("etcd client key {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).context("the etcd client certificate and key")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("an etcd client certificate and its key go together (--etcd-cert-file and --etcd-key-file)"),
    };
    Ok(std::sync::Arc::new(config))
}

impl Etcd {
    /// `endpoints`: `http://host:port`, comma-separated or several.
    pub fn new(endpoints: &[String]) -> anyhow::Result<Etcd> {
        Etcd::with_tls(endpoints, &Tls::default())
    }

    /// `endpoints`: `http://host:port` or, with `tls`, `https://host:port`; comma-separated
    /// or several.
    pub fn with_tls(endpoints: &[String], tls: &Tls) -> anyhow::Result<Etcd> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .flat_map(|e| e.split(','))
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            bail!("no etcd endpoint given (--etcd-endpoints http://HOST:2379 or ROUTER_ETCD_ENDPOINTS), and no lab with --datastore etcd is up");
        }
        for e in &endpoints {
            if !e.starts_with("http://") && !e.starts_with("https://") {
                bail!("etcd endpoint {e:?}: give it as http://HOST:PORT or https://HOST:PORT");
            }
        }
        let secure = endpoints.iter().any(|e| e.starts_with("https://"));
        if !secure && !tls.is_empty() {
            bail!("etcd TLS files are given, but no endpoint is https:// ({})", endpoints.join(","));
        }
        let config = if secure { Some(client_config(tls)?) } else { None };
        let build = |b: ureq::AgentBuilder| match &config {
            Some(c) => b.tls_config(c.clone()).build(),
            None => b.build(),
        };
        let agent =
            build(ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(2)).timeout(Duration::from_secs(10)));
        let streams = build(ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(2)).timeout_read(WATCH_IDLE));
        let no_client_cert = secure && tls.cert.is_none();
        Ok(Etcd { endpoints, agent, streams, no_client_cert })
    }

    /// What went wrong with a request, with the likely fix where TLS says enough.
    fn why(&self, err: &ureq::Error) -> String {
        let cause = root_cause(err);
        // The server's alert, or (when it closed first) a broken or reset connection.
        let ended = ["received fatal alert", "Broken pipe", "Connection reset"].iter().any(|m| cause.contains(m));
        match self.no_client_cert && ended {
            true => format!("{cause} (does etcd ask clients for a certificate? --etcd-cert-file and --etcd-key-file)"),
            false => cause,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let mut errors = Vec::new();
        for e in &self.endpoints {
            let url = format!("{e}{path}");
            match self.agent.post(&url).set("Content-Type", "application/json").send_string(&body.to_string()) {
                Ok(resp) => {
                    let text = resp.into_string().with_context(|| format!("reading the answer of {url}"))?;
                    return serde_json::from_str(&text).with_context(|| format!("{url} answered {text:?}"));
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    bail!("etcd at {e} refused {path} ({code}): {text}");
                }
                Err(err) => errors.push(format!("{e}: {}", self.why(&err))),
            }
        }
        Err(Unreachable(errors.join("; ")).into())
    }

    fn kvs(v: &Value) -> anyhow::Result<Vec<Kv>> {
        let mut out = Vec::new();
        for kv in v["kvs"].as_array().into_iter().flatten() {
            let key = B64.decode(kv["key"].as_str().unwrap_or("")).context("a key that is not base64")?;
            let value = B64.decode(kv["value"].as_str().unwrap_or("")).context("a value that is not base64")?;
            out.push(Kv {
                key: String::from_utf8_lossy(&key).into_owned(),
                value,
                mod_revision: int(&kv["mod_revision"]),
            });
        }
        Ok(out)
    }

    pub fn get(&self, key: &str) -> anyhow::Result<Option<Kv>> {
        let v = self.call("/v3/kv/range", json!({ "key": b64(key.as_bytes()) }))?;
        Ok(Self::kvs(&v)?.into_iter().next())
    }

    /// Every key under `prefix`, in key order, and the store's revision.
    pub fn list(&self, prefix: &str) -> anyhow::Result<(Vec<Kv>, i64)> {
        self.range(prefix.as_bytes(), &prefix_end(prefix))
    }

    /// Every key from `from` up to (not including) `to`, in key order, and the store's
    /// revision.
    pub fn range(&self, from: &[u8], to: &[u8]) -> anyhow::Result<(Vec<Kv>, i64)> {
        let v = self.call("/v3/kv/range", json!({ "key": b64(from), "range_end": b64(to) }))?;
        Ok((Self::kvs(&v)?, int(&v["header"]["revision"])))
    }

    /// Several ranges `(from, to)` read in one transaction: one round trip, and one
    /// revision for all of them. The keys of each, in key order, and that revision.
    pub fn ranges(&self, ranges: &[(&[u8], &[u8])]) -> anyhow::Result<(Vec<Vec<Kv>>, i64)> {
        let success: Vec<Value> = ranges
            .iter()
            .map(|(from, to)| json!({ "request_range": { "key": b64(from), "range_end": b64(to) } }))
            .collect();
        let v = self.call("/v3/kv/txn", json!({ "success": success }))?;
        let answers = v["responses"].as_array().map(Vec::as_slice).unwrap_or_default();
        if answers.len() != ranges.len() {
            bail!("etcd answered {} of {} ranges", answers.len(), ranges.len());
        }
        let lists = answers.iter().map(|a| Self::kvs(&a["response_range"])).collect::<anyhow::Result<_>>()?;
        Ok((lists, int(&v["header"]["revision"])))
    }

    /// Writes `key`; the revision it was written at.
    pub fn put(&self, key: &str, value: &[u8]) -> anyhow::Result<i64> {
        let v = self.call("/v3/kv/put", json!({ "key": b64(key.as_bytes()), "value": b64(value) }))?;
        Ok(int(&v["header"]["revision"]))
    }

    /// Writes `key` only if it was last changed at `mod_revision` (0: only if it does not
    /// exist); whether it was written.
    pub fn put_if(&self, key: &str, value: &[u8], mod_revision: i64) -> anyhow::Result<bool> {
        let k = b64(key.as_bytes());
        let v = self.call(
            "/v3/kv/txn",
            json!({
                "compare": [{ "key": k, "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision.to_string() }],
                "success": [{ "request_put": { "key": k, "value": b64(value) } }],
            }),
        )?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// Writes every `(key, value)` only if each `(key, mod_revision)` still holds (0: the key
    /// does not exist), all or nothing; whether it was written.
    pub fn put_all_if(&self, expect: &[(&str, i64)], puts: &[(&str, &[u8])]) -> anyhow::Result<bool> {
        self.txn(expect, puts, &[])
    }

    /// [`Etcd::put_all_if`] that also deletes `deletes`, in the same transaction.
    pub fn txn(&self, expect: &[(&str, i64)], puts: &[(&str, &[u8])], deletes: &[&str]) -> anyhow::Result<bool> {
        let compare: Vec<Value> = expect
            .iter()
            .map(|(k, rev)| json!({ "key": b64(k.as_bytes()), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string() }))
            .collect();
        let success: Vec<Value> = puts
            .iter()
            .map(|(k, v)| json!({ "request_put": { "key": b64(k.as_bytes()), "value": b64(v) } }))
            .chain(deletes.iter().map(|k| json!({ "request_delete_range": { "key": b64(k.as_bytes()) } })))
            .collect();
        let v = self.call("/v3/kv/txn", json!({ "compare": compare, "success": success }))?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// Watches every key under `prefix` for changes made at `from_revision` or later.
    pub fn watch(&self, prefix: &str, from_revision: i64) -> anyhow::Result<Watch> {
        let body = json!({ "create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": from_revision.to_string(),
        }});
        let mut errors = Vec::new();
        for e in &self.endpoints {
            let url = format!("{e}/v3/watch");
            match self.streams.post(&url).set("Content-Type", "application/json").send_string(&body.to_string()) {
                Ok(resp) => {
                    let reader: Box<dyn std::io::Read + Send> = Box::new(resp.into_reader());
                    return Ok(Watch {
                        stream: serde_json::Deserializer::from_reader(reader).into_iter(),
                        ignore: None,
                        within: Vec::new(),
                    });
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    bail!("etcd at {e} refused the watch ({code}): {text}");
                }
                Err(err) => errors.push(format!("{e}: {}", self.why(&err))),
            }
        }
        Err(Unreachable(errors.join("; ")).into())
    }

    /// Forgets the history before `revision` (what etcd's auto-compaction does).
    pub fn compact(&self, revision: i64) -> anyhow::Result<()> {
        self.call("/v3/kv/compaction", json!({ "revision": revision.to_string(), "physical": true }))?;
        Ok(())
    }

    /// Deletes every key under `prefix`; how many there were.
    pub fn delete_prefix(&self, prefix: &str) -> anyhow::Result<i64> {
        let v = self.call(
            "/v3/kv/deleterange",
            json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)) }),
        )?;
        Ok(int(&v["deleted"]))
    }

    /// Deletes `key` only if it was last changed at `mod_revision`; whether it was deleted.
    pub fn delete_if(&self, key: &str, mod_revision: i64) -> anyhow::Result<bool> {
        self.txn(&[(key, mod_revision)], &[], &[key])
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let v = self.call("/v3/kv/deleterange", json!({ "key": b64(key.as_bytes()) }))?;
        Ok(int(&v["deleted"]) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_end("/calico/"), b"/calico0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn a_watch_ignores_the_changes_it_is_told_to() {
        let ev = |k: &str| json!({ "type": "PUT", "kv": { "key": b64(k.as_bytes()) } });
        let pods = [ev("/calico/resources/v3/projectcalico.org/workloadendpoints/default/a")];
        let mixed = [pods[0].clone(), ev("/calico/resources/v3/projectcalico.org/ippools/p")];
        let ignore = Some("/calico/resources/v3/projectcalico.org/workloadendpoints/");
        assert!(!concerns(&pods, &[], ignore));
        assert!(concerns(&mixed, &[], ignore));
        assert!(concerns(&pods, &[], None));
        assert!(!concerns(&[], &[], None));
        // Within some prefixes of a wider watch: only theirs count, less what is ignored.
        let within = ["/calico/resources/".to_string(), "/calico/ipam/v2/host/node-a/".to_string()];
        let mine = [ev("/calico/ipam/v2/host/node-a/ipv4/block/10.244.1.0-26")];
        let theirs = [ev("/calico/ipam/v2/host/node-b/ipv4/block/10.244.2.0-26")];
        let addresses = [ev("/calico/ipam/v2/assignment/ipv4/block/10.244.1.0-26")];
        assert!(concerns(&mine, &within, ignore));
        assert!(!concerns(&theirs, &within, ignore) && !concerns(&addresses, &within, ignore));
        assert!(!concerns(&pods, &within, ignore) && concerns(&mixed, &within, ignore));
    }

    #[test]
    fn endpoints_are_split_and_checked() {
        let e = Etcd::new(&["http://10.0.0.1:2379, http://10.0.0.2:2379/".into()]).expect("endpoints");
        assert_eq!(e.endpoints(), ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]);
        assert!(Etcd::new(&[]).is_err());
        assert!(Etcd::new(&["ftp://x:2379".into()]).is_err());
        let e = Etcd::new(&["https://x:2379".into()]).expect_err("https without a CA").to_string();
        assert!(e.contains("needs the CA that signed etcd's certificate"), "{e}");
        let tls = Tls { ca_cert: Some("/nonexistent/ca.pem".into()), ..Tls::default() };
        let e = Etcd::with_tls(&["http://x:2379".into()], &tls).expect_err("TLS over http").to_string();
        assert!(e.contains("no endpoint is https://"), "{e}");
        let e = format!("{:#}", Etcd::with_tls(&["https://x:2379".into()], &tls).expect_err("no such file"));
        assert!(e.contains("etcd CA certificate /nonexistent/ca.pem"), "{e}");
    }
}
