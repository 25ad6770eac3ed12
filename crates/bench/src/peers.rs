//! What `compare` needs besides opensig-server, installed when it can be and checked when it
//! cannot: the Socket.IO server's npm packages, `nats-server` (Debian), and the browser
//! scenario's packages and built SDK. Each missing piece is named with the command that adds
//! it; the scenarios that need it are skipped, the others still run.

use std::path::Path;
use std::process::Command;

/// What is ready.
#[derive(Debug, Default)]
pub struct Ready {
    pub socketio: bool,
    pub nats: bool,
    pub browser: bool,
    /// Why something is not ready, with what to do.
    pub problems: Vec<String>,
}

fn have(program: &str) -> bool {
    crate::systems::which(program).is_ok()
}

/// `npm ci` (or `npm install` without a lock file) in `dir` unless `probe` exists there.
fn npm_packages(dir: &Path, probe: &str, what: &str, problems: &mut Vec<String>) -> bool {
    if dir.join("node_modules").join(probe).exists() {
        return true;
    }
    if !have("npm") {
        problems.push(format!(
            "{what}: npm is not installed (Debian: apt-get install npm), then: cd {} && npm ci",
            dir.display()
        ));
        return false;
    }
    let verb = if dir.join("package-lock.json").exists() {
        "ci"
    } else {
        "install"
    };
    eprintln!(
        "[compare] installing {what}: npm {verb} in {}",
        dir.display()
    );
    let ok = Command::new("npm")
        .args([verb, "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !dir.join("node_modules").join(probe).exists() {
        problems.push(format!(
            "{what}: `npm {verb}` in {} failed (run it there to see why)",
            dir.display()
        ));
        return false;
    }
    true
}

/// `nats-server` on the PATH, installed from Debian when this process may.
fn nats(problems: &mut Vec<String>) -> bool {
    if have("nats-server") {
        return true;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root && have("apt-get") {
        eprintln!("[compare] installing nats-server (apt-get)");
        let install = || {
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "nats-server",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-q"]).status();
            install();
        }
        if have("nats-server") {
            return true;
        }
    }
    problems.push(
        "NATS: nats-server is not installed (Debian: sudo apt-get install nats-server)".into(),
    );
    false
}

/// Install or check every peer; `browser` only when the browser scenario will run.
pub fn prepare(root: &Path, peers: &Path, browser: bool) -> Ready {
    let mut r = Ready::default();
    r.socketio = npm_packages(
        &peers.join("socketio"),
        "socket.io",
        "Socket.IO",
        &mut r.problems,
    );
    r.nats = nats(&mut r.problems);
    if browser {
        let packages = npm_packages(
            &root.join("tests/compat"),
            "playwright-core",
            "the browser scenario's packages",
            &mut r.problems,
        );
        let sdk = root.join("pkg/opensig-classic.js").exists();
        if !sdk {
            r.problems.push(
                "browser: the SDK is not built (scripts/build-sdk), so the browser rows are skipped"
                    .into(),
            );
        }
        r.browser = packages && sdk;
    }
    r
}
