//! Real services for the dependency kinds: Redis and PostgreSQL (started by
//! `scripts/setup-test-deps` on loopback ports), llama-cpp-python's OpenAI-compatible server
//! with a tiny model generated on the spot, and a TCP proxy a test can cut to make any of them go
//! away mid-run.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::output::{Logs, Watch};

const SETUP: &str = "scripts/setup-test-deps";

fn reachable(addr: &str, what: &str) -> String {
    let sock: SocketAddr = addr.parse().expect("a socket address");
    if TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_err() {
        panic!("{what} is not running on {addr}; start it with {SETUP}");
    }
    addr.to_owned()
}

/// The test Redis (`VITALS_TEST_REDIS_PORT`, default 6399), checked to be up.
pub fn redis_addr() -> String {
    let port = std::env::var("VITALS_TEST_REDIS_PORT").unwrap_or_else(|_| "6399".into());
    reachable(&format!("127.0.0.1:{port}"), "the test Redis")
}

/// The test PostgreSQL (`VITALS_TEST_PG_PORT`, default 5499): user `vitals`, password
/// `vitals-test`, database `vitals` with `items(42, 'the known row')`.
pub fn postgres_addr() -> String {
    let port = std::env::var("VITALS_TEST_PG_PORT").unwrap_or_else(|_| "5499".into());
    reachable(&format!("127.0.0.1:{port}"), "the test PostgreSQL")
}

/// The password of the test PostgreSQL's `vitals` user.
pub const POSTGRES_PASSWORD: &str = "vitals-test";

/// A TCP forwarder on `127.0.0.1:0` to `target`. [`TcpProxy::cut`] closes the listener and every
/// open connection, as a server that went away would.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl TcpProxy {
    pub async fn start(target: &str) -> TcpProxy {
        Self::start_on("127.0.0.1:0", target).await
    }

    /// Like [`TcpProxy::start`], on `addr`: a cut proxy comes back on the same address.
    pub async fn start_on(addr: &str, target: &str) -> TcpProxy {
        let listener = TcpListener::bind(addr).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let target = target.to_owned();
        let (c, t) = (cancel.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = c.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let target = target.clone();
                let c = c.clone();
                t.spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = c.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        TcpProxy {
            addr,
            cancel,
            tasks,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and drops every forwarded connection.
    pub async fn cut(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) serving a tiny
/// random-weight Llama model that this harness generates with the `gguf` package: real protocol,
/// real inference, gibberish answers. The model alias is `tiny`. Killed on drop.
#[derive(Debug)]
pub struct LlmServer {
    child: Child,
    addr: SocketAddr,
    logs: Logs,
    _dir: tempfile::TempDir,
}

/// The Python that has llama-cpp-python's server (the validators' venv).
pub fn llm_python() -> PathBuf {
    let venvs = std::env::var("VENVS").unwrap_or_else(|_| "/tmp/validators-venvs".into());
    let py = PathBuf::from(venvs).join("llm/bin/python");
    assert!(
        py.exists(),
        "{} not found: llama-cpp-python's server is not installed; run {SETUP}",
        py.display()
    );
    py
}

/// llama.cpp's own server, `llama-server` (C++), which `scripts/setup-test-deps` builds from
/// the llama.cpp sources llama-cpp-python ships: `VITALS_TEST_LLAMA_SERVER`, or where that script
/// puts it.
pub fn llama_server() -> PathBuf {
    let path = std::env::var("VITALS_TEST_LLAMA_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            PathBuf::from(home).join(".cache/vitals-llama-server/llama-server")
        });
    assert!(
        path.exists(),
        "{} not found: llama.cpp's server is not built; run {SETUP}",
        path.display()
    );
    path
}

/// `make_tiny_gguf.py` from the shared validators, found from the workspace root.
fn tiny_model_script() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let validators = std::env::var("VITALS_VALIDATORS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/validators"));
    let script = validators.join("llm/make_tiny_gguf.py");
    assert!(
        script.exists(),
        "{} not found; check out shared/ beside this repository or set VITALS_VALIDATORS",
        script.display()
    );
    script
}

/// Writes the tiny random-weight model into `dir` and returns its path.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("tiny.gguf");
    let out = Command::new(llm_python())
        .arg(tiny_model_script())
        .arg(&model)
        .output()
        .expect("run make_tiny_gguf.py");
    assert!(
        out.status.success(),
        "generating the tiny model failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    model
}

impl LlmServer {
    /// Generates the model, starts the server on `127.0.0.1:0` and waits until it listens.
    pub fn start() -> LlmServer {
        let py = llm_python();
        let dir = tempfile::tempdir().expect("temp dir");
        let model = dir.path().join("tiny.gguf");
        let out = Command::new(&py)
            .arg(tiny_model_script())
            .arg(&model)
            .output()
            .expect("run make_tiny_gguf.py");
        assert!(
            out.status.success(),
            "generating the tiny model failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = Command::new(&py)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&model)
            .args([
                "--model_alias",
                "tiny",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--n_ctx",
                "512",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start llama_cpp.server");
        let watch = Watch::start(&mut child);
        // `INFO:     Uvicorn running on http://127.0.0.1:37219 (Press CTRL+C to quit)`
        let addr = watch.wait_for(
            &mut child,
            "the LLM server",
            Duration::from_secs(60),
            |line| {
                line.split("running on http://")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            },
        );
        let logs = watch.logs;
        LlmServer {
            child,
            addr,
            logs,
            _dir: dir,
        }
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// moto's ECS endpoint (`moto_server` from the validators' venv) on `127.0.0.1:0`, with a boto3
/// helper for setting up and reading back state as a user's own tooling would. Killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    addr: SocketAddr,
}

fn moto_venv() -> PathBuf {
    let venvs = std::env::var("VENVS").unwrap_or_else(|_| "/tmp/validators-venvs".into());
    let dir = PathBuf::from(venvs).join("moto/bin");
    assert!(
        dir.join("moto_server").exists(),
        "{} not found: moto is not installed; run {SETUP}",
        dir.join("moto_server").display()
    );
    dir
}

impl MotoServer {
    pub fn start() -> MotoServer {
        let mut child = Command::new(moto_venv().join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto_server");
        let watch = Watch::start(&mut child);
        // ` * Running on http://127.0.0.1:43505`
        let addr = watch.wait_for(&mut child, "moto_server", Duration::from_secs(30), |line| {
            line.split("Running on http://").nth(1)?.trim().parse().ok()
        });
        MotoServer { child, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment a client of this endpoint needs: static test credentials and a region.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Runs `script` with boto3 and `ecs` bound to a client of this endpoint; its stdout, which
    /// should be JSON, is parsed.
    pub fn boto3(&self, script: &str) -> serde_json::Value {
        let program = format!(
            "import boto3, json, sys\necs = boto3.client('ecs', endpoint_url='{}')\n{script}\n",
            self.url()
        );
        let mut cmd = Command::new(moto_venv().join("python"));
        cmd.arg("-c").arg(program);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run boto3");
        assert!(
            out.status.success(),
            "boto3 script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "boto3 script printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes, in `d`, a CA made on the spot (`ca.crt`) and a certificate it signed for 127.0.0.1
/// and localhost (`server.crt`, `server.key`), with openssl.
fn make_test_ca(d: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}; install it with {SETUP}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        d.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write leaf.ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=vitals test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(&ca);
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&csr);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "server.crt",
    ]);
}

/// A Redis of the test's own that speaks TLS only (`rediss://`), with a certificate from a CA
/// made on the spot, and a password. Stopped when dropped.
#[derive(Debug)]
pub struct TlsRedis {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The PEM file of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    /// The password Redis requires.
    pub password: &'static str,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    pub const PASSWORD: &'static str = "tls-redis-secret-5a7c";

    pub fn start() -> TlsRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        make_test_ca(d);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--tls-port"])
            .arg(port.to_string())
            .args([
                "--tls-cert-file",
                "server.crt",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
            .args([
                "--requirepass",
                Self::PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e}; install it with {SETUP}"));
        let addr = format!("127.0.0.1:{port}");
        let sock: SocketAddr = addr.parse().expect("addr");
        let mut tries = 0;
        while TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_err() {
            tries += 1;
            assert!(tries < 200, "the TLS Redis did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsRedis {
            addr,
            ca_file: d.join("ca.crt"),
            password: Self::PASSWORD,
            child,
            _dir: dir,
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS server of the test's own (Python's `http.server` behind `ssl`), with a certificate
/// from a CA made on the spot: the stand-in for a model server or an API behind a private CA.
/// Every `GET` answers 200 with `{"path": …, "data": [{"id": "test-model"}]}` (a model list,
/// as `/v1/models` gives), except:
/// - `GET /stream` streams two server-sent events 1.2 s apart;
/// - `GET /cut` hangs up 0.3 s after the first event of its stream;
/// - `GET /connections` answers `{"connections": N}`, the connections accepted so far.
/// - every `POST` answers 200 with `{"path", "body", "content_length", "host"}`: its path, its
///   body echoed, and the `Content-Length` and `Host` headers it came with (null without).
///
/// Stopped when dropped.
#[derive(Debug)]
pub struct TlsHttp {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The PEM file of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

const TLS_HTTP_PY: &str = r#"
import http.server, json, ssl, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections = 0
    def setup(self):
        H.connections += 1
        super().setup()
    def answer(self, doc):
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, pause in enumerate([0, 1.2]):
                time.sleep(pause)
                event = ("data: %d\n\n" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/connections":
            return self.answer({"connections": H.connections})
        if self.path == "/cut":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"9\r\ndata: 0\n\n\r\n")
            self.wfile.flush()
            time.sleep(0.3)
            # Hung up in the middle of the answer, without TLS's close_notify: a server that died.
            self.close_connection = True
            return
        self.answer({"path": self.path, "object": "list", "data": [{"id": "test-model"}]})
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.answer({"path": self.path, "body": self.rfile.read(n).decode(),
                     "content_length": self.headers.get("Content-Length"),
                     "host": self.headers.get("Host")})
    def log_message(self, *args):
        pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("server.crt", "server.key")
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl TlsHttp {
    pub fn start() -> TlsHttp {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        make_test_ca(d);
        let mut child = Command::new("python3")
            .args(["-c", TLS_HTTP_PY])
            .current_dir(d)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("python3: {e}; install it with {SETUP}"));
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("read the port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the HTTPS server printed {line:?}, not its port"));
        TlsHttp {
            addr: format!("127.0.0.1:{port}"),
            ca_file: d.join("ca.crt"),
            child,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}

impl Drop for TlsHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
