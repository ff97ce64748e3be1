//! PostgreSQL over TLS: a throwaway cluster of this test's own (`initdb` and
//! `pg_ctl` in a temporary directory, a free port, `ssl=on`, plain
//! connections refused by `pg_hba.conf`) with a CA and a server certificate
//! for `localhost` that the test makes with the `openssl` command; then
//! `PgStore::connect` with each `sslmode`, right and wrong CA, right and
//! wrong host name. The server is stopped by its pid at the end.
//!
//! Needs the PostgreSQL server binaries (`/usr/lib/postgresql/*/bin`) and
//! `openssl`; skips loudly without them unless `QLEARN_REQUIRE_POSTGRES=1`.
#![cfg(feature = "postgres")]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use qlearn_core::store::postgres::PgStore;

/// The directory of `initdb` and `pg_ctl`, the newest version first.
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root
/// (the server refuses to run as root).
fn pg(cmd: &Path, args: &[&str]) -> std::process::Output {
    let out = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(cmd)
            .args(args)
            .output()
    } else {
        Command::new(cmd).args(args).output()
    };
    out.unwrap_or_else(|e| panic!("{}: {e}", cmd.display()))
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`NAME-ca.pem`, `NAME-ca.key`) made in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=qlearn test CA {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// The cluster: stopped (by the postmaster's pid) and removed on drop.
struct Cluster {
    dir: tempfile::TempDir,
    data: PathBuf,
    port: u16,
}

impl Cluster {
    /// `None` when the binaries are missing (after saying so).
    fn start() -> Option<Cluster> {
        let required = std::env::var("QLEARN_REQUIRE_POSTGRES").as_deref() == Ok("1");
        let have_openssl = Command::new("openssl").arg("version").output().is_ok();
        let Some(bin) = pg_bin().filter(|_| have_openssl) else {
            assert!(
                !required,
                "QLEARN_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries or openssl"
            );
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED postgres_tls: no /usr/lib/postgresql/*/bin/initdb or no openssl"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The CA the server's certificate comes from, and another one.
        make_ca(d, "right");
        make_ca(d, "wrong");
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "right-ca.pem",
                "-CAkey",
                "right-ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        let data = d.join("data");
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(d)
                .status()
                .unwrap();
            assert!(st.success());
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let out = pg(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // TLS only: a plain TCP connection is refused.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} \
             -c ssl=on -c ssl_cert_file={dir}/server.pem -c ssl_key_file={dir}/server.key \
             -c fsync=off",
            dir = d.display()
        );
        let log = d.join("server.log");
        let out = pg(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(Cluster { dir, data, port })
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The postmaster's pid is the first line of postmaster.pid; SIGINT
        // is PostgreSQL's fast shutdown.
        let pidfile = self.data.join("postmaster.pid");
        let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
        else {
            return;
        };
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let t0 = Instant::now();
        while pidfile.exists() && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if pidfile.exists() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// Connects and runs one call through the pool; `Err` is the message.
fn try_store(url: &str) -> Result<(), String> {
    let store = PgStore::connect_with_schema(url, "tls_check").map_err(|e| e.to_string())?;
    store.drop_schema().map_err(|e| e.to_string())
}

#[test]
fn sslmodes_against_a_tls_only_server() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let right = c.file("right-ca.pem");
    let wrong = c.file("wrong-ca.pem");
    let enc = |p: &str| p.replace('/', "%2F");

    // Plain is refused by the server (so the successes below are TLS).
    for q in ["", "sslmode=disable"] {
        let e = try_store(&c.url("localhost", q)).unwrap_err();
        assert!(
            e.contains("no encryption") || e.contains("pg_hba.conf"),
            "{q}: {e}"
        );
    }
    // Encrypted without checking the certificate (libpq's require, prefer).
    try_store(&c.url("localhost", "sslmode=require")).unwrap();
    try_store(&c.url("127.0.0.1", "sslmode=prefer")).unwrap();
    // verify-full: the right CA and the certificate's name.
    try_store(&c.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", enc(&right)),
    ))
    .unwrap();
    // verify-ca: the right CA, any name.
    try_store(&c.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", enc(&right)),
    ))
    .unwrap();

    // Wrong host name: the certificate names localhost only.
    let e = try_store(&c.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", enc(&right)),
    ))
    .unwrap_err();
    eprintln!("verify-full, wrong host: {e}");
    assert!(
        e.contains("cannot connect") && e.contains("certificate") && e.contains("name"),
        "{e}"
    );
    // Wrong CA, with every verifying mode (require with a CA file verifies, as libpq does).
    for mode in ["verify-full", "verify-ca", "require"] {
        let e = try_store(&c.url(
            "localhost",
            &format!("sslmode={mode}&sslrootcert={}", enc(&wrong)),
        ))
        .unwrap_err();
        assert!(
            e.contains("cannot connect")
                && e.contains("certificate")
                && e.to_lowercase().contains("issuer"),
            "{mode}: {e}"
        );
    }
    // Settings that cannot work are refused before connecting, naming why.
    let e = try_store(&c.url("localhost", "sslmode=verify-full")).unwrap_err();
    assert!(e.contains("sslrootcert"), "{e}");
    let e = try_store(&c.url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            enc(&c.file("nope.pem"))
        ),
    ))
    .unwrap_err();
    assert!(e.contains("cannot read sslrootcert"), "{e}");
    let e = try_store(&c.url("localhost", "sslmode=allow")).unwrap_err();
    assert!(e.contains("sslmode"), "{e}");
}
