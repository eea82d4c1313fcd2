//! The interactive prompt, driven through tmux as a person would use it: the continuation
//! prompt on multi-line input, `\x` and `\?` feedback, `\o file.json` writing JSON and failing at
//! once on a bad path, `\d` with SQL types, a positioned error, `\timing`, and the candidate list
//! on an ambiguous Tab. Needs `tmux` (scripts/install-test-deps.sh installs it).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of its own (a private socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn start(socket: &str, shell_cmd: &str) -> Tmux {
        let t = Tmux {
            socket: socket.to_string(),
        };
        let ok = t
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "q",
                "-x",
                "160",
                "-y",
                "50",
                shell_cmd,
            ])
            .status()
            .expect("tmux not found: run scripts/install-test-deps.sh")
            .success();
        assert!(ok, "tmux new-session failed");
        t
    }

    /// Type `text` literally, then press the given keys (`Enter`, `Tab`, `C-u`).
    fn send(&self, text: &str, keys: &[&str]) {
        if !text.is_empty() {
            // tmux reads an argument ending in `;` as a command separator unless escaped
            let arg = match text.strip_suffix(';') {
                Some(t) => format!("{t}\\;"),
                None => text.to_string(),
            };
            let ok = self
                .cmd()
                .args(["send-keys", "-t", "q", "-l", &arg])
                .status()
                .expect("tmux send-keys")
                .success();
            assert!(ok);
        }
        for k in keys {
            let ok = self
                .cmd()
                .args(["send-keys", "-t", "q", k])
                .status()
                .expect("tmux send-keys")
                .success();
            assert!(ok);
        }
    }

    fn screen(&self) -> String {
        let o = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "q", "-S", "-"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Wait (at most 30 s, so a broken prompt fails instead of hanging) until the screen
    /// satisfies `pred`; returns the screen.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "prompt never showed {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until `needle` appears more often than it did in `before`.
    fn wait_new(&self, before: &str, needle: &str) -> String {
        let n = before.matches(needle).count();
        self.wait_for(needle, |s| s.matches(needle).count() > n)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // the session ends with `\q`; the server may be gone already
        let _ = self
            .cmd()
            .arg("kill-server")
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[test]
fn prompt_in_tmux() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(common::build_lake(&lake));
    let bin = Path::new(env!("CARGO_BIN_EXE_loglake-query"));
    let shell_cmd = format!(
        "env -u LOGLAKE_LAKE HOME={} PAGER=cat LOGLAKE_PROGRESS=never {} --lake {}",
        sh_quote(&home),
        sh_quote(bin),
        sh_quote(&lake)
    );
    let t = Tmux::start(
        &format!("loglake-prompt-{}", std::process::id()),
        &shell_cmd,
    );
    let s = t.wait_for("the banner", |s| s.contains("loglake query — 3 tables"));

    // continuation prompt on multi-line input, then the result
    t.send("SELECT pod,", &["Enter"]);
    t.wait_for("the continuation prompt", |s| {
        s.lines().any(|l| l.trim_end() == "      ->")
    });
    t.send(
        "count(*) AS n FROM app GROUP BY pod ORDER BY pod;",
        &["Enter"],
    );
    let s2 = t.wait_new(&s, "| b   | 6 |");
    assert!(
        s2.contains("loglake> SELECT pod,\n      -> count(*) AS n FROM app"),
        "{s2}"
    );
    assert!(s2.contains("| a   | 8 |"), "{s2}");

    // \x says what it did; the next result is vertical
    t.send("\\x", &["Enter"]);
    let s = t.wait_new(&s2, "expanded display is on");
    t.send("SELECT 1 AS one;", &["Enter"]);
    let s = t.wait_new(&s, "-[ RECORD 1 ]");
    t.send("\\x", &["Enter"]);
    let s = t.wait_new(&s, "expanded display is off");

    // \? lists every command, \x and \maxrows included
    t.send("\\?", &["Enter"]);
    let s = t.wait_new(&s, "this list");
    for c in [
        "\\x ",
        "\\maxrows N|off",
        "\\maxwidth N|auto|off",
        "\\o FILE",
        "\\timing",
        "\\d TABLE",
        "\\format",
    ] {
        assert!(s.contains(c), "\\? lacks {c}:\n{s}");
    }

    // \o out.json writes JSON (format from the extension), every key in every row
    let out = dir.path().join("out.json");
    t.send(&format!("\\o {}", out.display()), &["Enter"]);
    let s = t.wait_new(&s, "(json); \\o alone returns to the terminal");
    t.send(
        "SELECT pod, trace_id FROM app ORDER BY ts, pod LIMIT 2;",
        &["Enter"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let json = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "out.json never held JSON: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        json,
        serde_json::json!([{"pod": "a", "trace_id": null}, {"pod": "b", "trace_id": null}])
    );
    // a bad path fails at once and keeps the current output
    t.send("\\o /nonexistent/x.csv", &["Enter"]);
    let s = t.wait_new(&s, "cannot write /nonexistent/x.csv");
    assert!(s.contains("results still go to"), "{s}");
    t.send("\\o", &["Enter"]);
    let s = t.wait_new(&s, "results go to the terminal");

    // \d with SQL type names
    t.send("\\d events", &["Enter"]);
    let s = t.wait_new(&s, "| reason      | VARCHAR");
    assert!(s.contains("| ts          | TIMESTAMP"), "{s}");

    // an error with the line and a caret, and a suggestion
    t.send("SELECT mesage FROM app;", &["Enter"]);
    let s = t.wait_new(&s, "column mesage not found (did you mean message?)");
    assert!(
        s.contains("LINE 1: SELECT mesage FROM app\n               ^"),
        "{s}"
    );

    // \timing and \maxrows give feedback
    t.send("\\timing", &["Enter"]);
    let s = t.wait_new(&s, "timing is on");
    t.send("\\maxrows 1", &["Enter"]);
    let s = t.wait_new(&s, "at most 1 rows per result");
    t.send("SELECT pod FROM app ORDER BY pod;", &["Enter"]);
    let s = t.wait_new(&s, "row(s) in ");
    assert!(s.contains("output limited to 1 rows"), "{s}");

    // a wide value is cut to fit the terminal (tmux's 160 columns): `| k   | x…x… |` is 160
    // characters on one line; \maxwidth sets another width
    let wide = "x".repeat(300);
    t.send(&format!("SELECT 'k' AS key, '{wide}' AS v;"), &["Enter"]);
    let s = t.wait_new(&s, &format!("| k   | {}… |\n", "x".repeat(149)));
    t.send("\\maxwidth 40", &["Enter"]);
    let s = t.wait_new(&s, "tables fit in 40 columns");
    t.send(&format!("SELECT 'k' AS key, '{wide}' AS v;"), &["Enter"]);
    t.wait_new(&s, &format!("| k   | {}… |\n", "x".repeat(29)));

    // an ambiguous Tab lists the candidates
    t.send("SELECT co", &["Tab"]);
    t.wait_for("the completion list", |x| {
        x.contains("correlate") && x.contains("count") && x.contains("coalesce")
    });
    t.send("", &["C-u"]);
    t.send("\\q", &["Enter"]);
}
