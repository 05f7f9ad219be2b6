//! Live sources over HTTPS, end to end with the real `bot-runtime serve`
//! binary: loopback TLS servers shaped like CoinGecko (`/api/v3/simple/price`,
//! body from `tests/fixtures/live/coingecko_simple_price.json` with its
//! `last_updated_at` set to now) carry certificates from a CA the test makes
//! (rcgen); the runtime trusts it only through `SSL_CERT_FILE`.
//!
//! 1. `SSL_CERT_FILE` = the test CA, sources `[wronghost, gecko]`: the first
//!    server's certificate is for another host name, so that source fails
//!    with an error naming the certificate problem and the chain falls back
//!    to `gecko`, whose prices (exact decimals) reach the engine's decisions.
//! 2. `SSL_CERT_FILE` = another CA: the server is not trusted; the source
//!    fails naming the unknown issuer, no candle is made, the status says
//!    shows no candle, and the process keeps serving.
//!
//! In-process, `HttpSource` with its own roots: a trusted server answers;
//! an untrusted one fails each poll naming the unknown issuer and opens the
//! source's circuit breaker.
//!
//! Nothing asserts a duration: every wait polls with a generous deadline.

mod common;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bot_runtime::market::live::{BreakerState, HttpPolicy, HttpSource, SourceError};
use bot_runtime::types::MAX_PRICE_DP;
use common::serve::{Runtime, get};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use reqwest::header::HeaderMap;
use rust_decimal::{Decimal, RoundingStrategy};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A test CA: its PEM and an issuer for server certificates.
struct TestCa {
    pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// A server configuration presenting a certificate for `host` signed by
    /// this CA (chain: leaf, CA).
    fn server_config(&self, host: &str) -> rustls::ServerConfig {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![host.to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let chain: Vec<CertificateDer<'static>> =
            vec![cert.der().clone(), self.issuer.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
    }
}

/// `body` with every `"last_updated_at": <seconds>` set to `now`.
fn stamped(body: &str, now: i64) -> String {
    const KEY: &str = "\"last_updated_at\":";
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest.find(KEY) {
        out.push_str(&rest[..i + KEY.len()]);
        let after = &rest[i + KEY.len()..];
        let digits = after
            .trim_start()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.trim_start().len());
        let skip = after.len() - after.trim_start().len() + digits;
        out.push_str(&format!(" {now}"));
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

fn fixture() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/live/coingecko_simple_price.json");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// A CoinGecko-shaped HTTPS upstream on 127.0.0.1.
struct Upstream {
    /// `https://localhost:<port>/api/v3`.
    url: String,
    /// Requests answered over an established TLS session.
    hits: Arc<AtomicU64>,
    /// TLS handshakes that failed (the client refused the certificate).
    handshake_failures: Arc<AtomicU64>,
}

fn start_upstream(rt: &tokio::runtime::Runtime, config: rustls::ServerConfig) -> Upstream {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a loopback port for the HTTPS upstream");
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let hits = Arc::new(AtomicU64::new(0));
    let handshake_failures = Arc::new(AtomicU64::new(0));
    let (h, f) = (hits.clone(), handshake_failures.clone());
    let body = fixture();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, h, f, body) = (acceptor.clone(), h.clone(), f.clone(), body.clone());
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(_) => {
                        f.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                };
                // One request per connection (answered with `Connection: close`).
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                h.fetch_add(1, Ordering::SeqCst);
                let (status, body) = if path.starts_with("/api/v3/simple/price?") {
                    ("200 OK", stamped(&body, chrono::Utc::now().timestamp()))
                } else {
                    ("404 Not Found", format!("no route {path}"))
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Upstream {
        url: format!("https://localhost:{port}/api/v3"),
        hits,
        handshake_failures,
    }
}

fn manifest(dir: &Path, sources: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from(
        "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {name: acct}\n\
         spec: {initialBalance: \"100000\"}\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: StrategyConfig\nmetadata: {name: strat}\nspec:\n  \
         mode: Custom\n  signals:\n    smaCrossover: {fastPeriod: 1, slowPeriod: 2}\n  risk:\n    \
         fixedQuantity: \"1\"\n    confidenceThreshold: \"0\"\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: BotSession\nmetadata: {name: live}\nspec:\n  \
         accountRef: {name: acct}\n  strategyRef: {name: strat}\n  allocation: \"100000\"\n  \
         recordHolds: true\n  symbols: [BTC-USD, ETH-USD]\n  marketData:\n    source: Live\n    \
         live:\n      interval: 2s\n      pollInterval: 1s\n      maxAge: 30s\n      \
         jumpBandPct: \"20\"\n      warmUp: Record\n      useSharedFeed: false\n      sources:\n",
    );
    for (name, url) in sources {
        text.push_str(&format!(
            "        - {{name: {name}, kind: CoinGecko, requestsPerMinute: 600, baseUrl: \"{url}\"}}\n"
        ));
    }
    let path = dir.join("live.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The JSON log lines (`PAPERBOT_LOG_FORMAT=json`) saying that `source`
/// failed: their `error` fields.
fn source_errors(log: &str, source: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"] == "live price source failed" && v["fields"]["source"] == source
        })
        .map(|v| {
            v["fields"]["error"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn decisions(port: u16) -> Vec<Value> {
    let (code, body) = get(port, "/v1/decisions?limit=500");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn https_sources_verify_against_ssl_cert_file_and_fail_over_on_a_bad_certificate() {
    let net = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ca = TestCa::new("paperbot test CA");
    let gecko = start_upstream(&net, ca.server_config("localhost"));
    let wrong_host = start_upstream(&net, ca.server_config("prices.example.invalid"));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let ca_file = ca_file.display().to_string();
    let url = dir.path().join("ledger.db").display().to_string();

    // 1. Trusted CA: the wrong-host source fails on its certificate, the
    // chain falls back to `gecko`, whose fixture prices reach decisions.
    let m = manifest(
        dir.path(),
        &[("wronghost", &wrong_host.url), ("gecko", &gecko.url)],
    );
    let env = [
        ("SSL_CERT_FILE", ca_file.as_str()),
        ("PAPERBOT_LOG_FORMAT", "json"),
    ];
    let rt = Runtime::start(dir.path(), &m, &url, &env);
    rt.wait_for("decisions on HTTPS prices", |s| {
        s["candles"].as_u64() >= Some(3)
    });
    let found = decisions(rt.port);
    let price_of = |sym: &str| -> Vec<String> {
        found
            .iter()
            .filter(|d| d["symbol"] == sym)
            .map(|d| d["price"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let btc = price_of("BTC-USD");
    let eth = price_of("ETH-USD");
    assert!(!btc.is_empty() && !eth.is_empty(), "decisions: {found:#?}");
    assert!(btc.iter().all(|p| p == "67187.3358"), "{btc:?}");
    // The fixture's 17 decimals arrive exactly (never through f64); the
    // engine then rounds prices to MAX_PRICE_DP places (half to even).
    let sent: Decimal = "3459.12000000000003".parse().unwrap();
    let traded = sent
        .round_dp_with_strategy(MAX_PRICE_DP, RoundingStrategy::MidpointNearestEven)
        .normalize()
        .to_string();
    assert!(eth.iter().all(|p| *p == traded), "{eth:?} vs {traded}");
    assert!(gecko.hits.load(Ordering::SeqCst) > 0);
    assert!(
        gecko.handshake_failures.load(Ordering::SeqCst) == 0,
        "the trusted server's handshakes succeed"
    );
    assert_eq!(
        wrong_host.hits.load(Ordering::SeqCst),
        0,
        "no request reaches a server whose certificate is refused"
    );
    assert!(wrong_host.handshake_failures.load(Ordering::SeqCst) > 0);
    let log = rt.log_text();
    let errors = source_errors(&log, "wronghost");
    assert!(!errors.is_empty(), "no wronghost failure logged:\n{log}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("certificate") && e.contains("prices.example.invalid")),
        "the error names the certificate's host mismatch: {errors:#?}"
    );
    assert!(
        source_errors(&log, "gecko").is_empty(),
        "gecko never failed:\n{log}"
    );
    rt.terminate();

    // 2. Another CA in SSL_CERT_FILE: the server is untrusted. The source
    // fails naming the unknown issuer; no candles; the process serves on.
    let other = TestCa::new("some other CA");
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, &other.pem).unwrap();
    let other_file = other_file.display().to_string();
    let dir2 = tempfile::tempdir().unwrap();
    let url2 = dir2.path().join("ledger.db").display().to_string();
    let m2 = manifest(dir2.path(), &[("gecko", &gecko.url)]);
    let hits_before = gecko.hits.load(Ordering::SeqCst);
    let failures_before = gecko.handshake_failures.load(Ordering::SeqCst);
    let env = [
        ("SSL_CERT_FILE", other_file.as_str()),
        ("PAPERBOT_LOG_FORMAT", "json"),
    ];
    let mut rt = Runtime::start(dir2.path(), &m2, &url2, &env);
    let log = rt.wait_for_log("two failed polls of gecko", |log| {
        source_errors(log, "gecko").len() >= 2
    });
    let errors = source_errors(&log, "gecko");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("certificate") && e.contains("UnknownIssuer")),
        "the error names the untrusted issuer: {errors:#?}"
    );
    assert!(gecko.handshake_failures.load(Ordering::SeqCst) > failures_before);
    assert_eq!(
        gecko.hits.load(Ordering::SeqCst),
        hits_before,
        "no request went over an untrusted connection"
    );
    let s = rt.status();
    assert_eq!(s["candles"], 0, "no candle without a trusted price: {s:#}");
    assert!(s["lastCandleTime"].is_null(), "{s:#}");
    assert_eq!(s["phase"], "Running", "{s:#}");
    assert!(
        rt.is_running(),
        "the process keeps running:\n{}",
        rt.log_text()
    );
    assert_eq!(get(rt.port, "/healthz").0, 200);
    rt.terminate();
}

/// A client configuration trusting only `ca`.
fn trusting(ca: &TestCa) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// `HttpSource` in-process: a trusted server answers; an untrusted one fails
/// every poll with a connect error naming the unknown issuer, which counts
/// as a failure, so the source's breaker opens and the next poll sends no
/// request.
#[test]
fn http_source_over_https_trusts_its_roots_and_breaks_on_an_untrusted_server() {
    let net = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ca = TestCa::new("paperbot test CA");
    let server = start_upstream(&net, ca.server_config("localhost"));
    let url = format!(
        "{}/simple/price?ids=bitcoin&vs_currencies=usd&include_last_updated_at=true",
        server.url
    );
    let policy = HttpPolicy {
        max_retries: 0,
        breaker_failures: 2,
        breaker_cool_down: Duration::from_secs(600),
        ..HttpPolicy::default()
    };

    let good = HttpSource::with_tls_config(policy.clone(), trusting(&ca)).unwrap();
    let body = net
        .block_on(good.get(&url, &HeaderMap::new(), |b| Ok(b.to_string())))
        .unwrap();
    assert!(body.contains("67187.3358"), "{body}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    let other = TestCa::new("some other CA");
    let bad = HttpSource::with_tls_config(policy, trusting(&other)).unwrap();
    for _ in 0..2 {
        let err = net
            .block_on(bad.get(&url, &HeaderMap::new(), |b| Ok(b.to_string())))
            .unwrap_err();
        let SourceError::Connect(msg) = &err else {
            panic!("expected a connect error, got {err:?}");
        };
        assert!(
            msg.contains("invalid peer certificate") && msg.contains("UnknownIssuer"),
            "{msg}"
        );
    }
    assert_eq!(bad.breaker_state(), BreakerState::Open);
    let err = net
        .block_on(bad.get(&url, &HeaderMap::new(), |b| Ok(b.to_string())))
        .unwrap_err();
    assert!(matches!(err, SourceError::CircuitOpen { .. }), "{err:?}");
    assert_eq!(
        bad.requests_sent(),
        2,
        "no request while the breaker is open"
    );
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "nothing untrusted got through"
    );
    // The server notes a refused handshake once its side of it fails.
    let t0 = std::time::Instant::now();
    while server.handshake_failures.load(Ordering::SeqCst) < 2 {
        assert!(
            t0.elapsed() < common::serve::DEADLINE,
            "the server saw 2 refused handshakes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stamped_sets_every_last_updated_at() {
    let out = stamped(&fixture(), 1_800_000_000);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["bitcoin"]["last_updated_at"], 1_800_000_000);
    assert_eq!(v["ethereum"]["last_updated_at"], 1_800_000_000);
    assert!(out.contains("3459.12000000000003"), "{out}");
}
