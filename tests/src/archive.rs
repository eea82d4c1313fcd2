//! `loglake archive` invocations as the tests and benchmarks spell them: one builder instead of
//! the same argument vector repeated in every test file.
//!
//! ```no_run
//! use loglake_tests::archive::Archive;
//! # let (topic, table, dlq) = ("t", "s3://b/t", "s3://b/t-dlq");
//! let out = Archive::topic(topic, table).fresh_group().dlq(dlq).until_end().run();
//! ```

use std::process::{Command, Output};

use crate::{Proc, kafka, loglake_cmd, unique_name};

/// What a run archives: one topic into one table, or a lake of table definitions.
#[derive(Debug, Clone)]
enum Source {
    Topic {
        topic: String,
        table: String,
        decoder: String,
    },
    Lake {
        lake: String,
        tables_dir: String,
    },
}

/// A `loglake archive` invocation. Defaults: the test broker, the `fluentbit` decoder, no
/// group flag (the archiver's default group), no dead-letter table, continuous (no
/// `--until-end`), `LOGLAKE_LOG=warn` (from [`loglake_cmd`]).
#[derive(Debug, Clone)]
pub struct Archive {
    brokers: String,
    source: Source,
    group: Option<String>,
    dlq: Option<String>,
    until_end: bool,
    extra: Vec<String>,
    envs: Vec<(String, String)>,
}

/// The log filter under which the archiver logs each commit (tests read commits back from it).
pub const COMMIT_LOGS: &str = "warn,loglake_archiver=info";

impl Archive {
    fn with(brokers: String, source: Source) -> Self {
        Archive {
            brokers,
            source,
            group: None,
            dlq: None,
            until_end: false,
            extra: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// `--topic TOPIC --table TABLE --decoder fluentbit`.
    pub fn topic(topic: &str, table: &str) -> Self {
        Self::with(
            kafka().brokers.clone(),
            Source::Topic {
                topic: topic.to_string(),
                table: table.to_string(),
                decoder: "fluentbit".to_string(),
            },
        )
    }

    /// `--lake LAKE --tables-dir DIR`: every table definition in DIR.
    pub fn lake(lake: &str, tables_dir: &str) -> Self {
        Self::with(
            kafka().brokers.clone(),
            Source::Lake {
                lake: lake.to_string(),
                tables_dir: tables_dir.to_string(),
            },
        )
    }

    /// Another broker than the shared test broker (a private or stopped one).
    pub fn brokers(mut self, brokers: &str) -> Self {
        self.brokers = brokers.to_string();
        self
    }

    /// The decoder of a [`Archive::topic`] run.
    pub fn decoder(mut self, decoder: &str) -> Self {
        if let Source::Topic { decoder: d, .. } = &mut self.source {
            *d = decoder.to_string();
        }
        self
    }

    /// `--group GROUP`: restarts that must resume as production does use one group.
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.to_string());
        self
    }

    /// `--group` with a name no other run uses.
    pub fn fresh_group(self) -> Self {
        self.group(&unique_name("g"))
    }

    /// `--dlq-table TABLE`.
    pub fn dlq(mut self, table: &str) -> Self {
        self.dlq = Some(table.to_string());
        self
    }

    /// `--until-end`: archive up to the end offsets seen at start, then exit.
    pub fn until_end(mut self) -> Self {
        self.until_end = true;
        self
    }

    /// `--NAME VALUE` (name without the dashes).
    pub fn flag(mut self, name: &str, value: &str) -> Self {
        self.extra.push(format!("--{name}"));
        self.extra.push(value.to_string());
        self
    }

    /// Arguments as given, after the standard ones.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.extra
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// An environment variable of the run.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Plain-text logs (no colour) at `filter` (`LOGLAKE_LOG`).
    pub fn logs(self, filter: &str) -> Self {
        self.env("NO_COLOR", "1").env("LOGLAKE_LOG", filter)
    }

    /// The arguments after `archive`.
    pub fn to_args(&self) -> Vec<String> {
        let mut pairs: Vec<(&str, &str)> = vec![("--brokers", &self.brokers)];
        match &self.source {
            Source::Topic { topic, .. } => pairs.push(("--topic", topic)),
            Source::Lake { lake, tables_dir } => pairs.extend([
                ("--lake", lake.as_str()),
                ("--tables-dir", tables_dir.as_str()),
            ]),
        }
        if let Some(g) = &self.group {
            pairs.push(("--group", g));
        }
        if let Source::Topic { table, decoder, .. } = &self.source {
            pairs.extend([("--table", table.as_str()), ("--decoder", decoder.as_str())]);
        }
        if let Some(d) = &self.dlq {
            pairs.push(("--dlq-table", d));
        }
        let mut a: Vec<String> = pairs
            .into_iter()
            .flat_map(|(k, v)| [k.to_string(), v.to_string()])
            .collect();
        a.extend(self.extra.iter().cloned());
        if self.until_end {
            a.push("--until-end".into());
        }
        a
    }

    /// `loglake archive …` with the test S3 credentials and this run's environment.
    pub fn command(&self) -> Command {
        let mut c = loglake_cmd();
        c.arg("archive").args(self.to_args());
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Runs to the end; whatever the exit status.
    pub fn output(&self) -> Output {
        self.command().output().expect("run loglake archive")
    }

    /// Runs to the end and asserts it succeeded (the failure shows the archiver's stderr).
    pub fn run(&self) -> Output {
        let out = self.output();
        assert!(
            out.status.success(),
            "loglake archive failed: {}\nargs: {:?}\nstderr:\n{}",
            out.status,
            self.to_args(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// [`Archive::run`] off the async runtime (the binary blocks until it exits).
    pub async fn run_blocking(self) -> Output {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .expect("join")
    }

    /// Starts it in the background (a continuous archiver, or one to kill).
    pub fn spawn(&self) -> Proc {
        Proc::spawn(self.command()).expect("spawn loglake archive")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shared broker is not asked for its address: these tests start no service.
    fn at(brokers: &str, source: Source) -> Archive {
        Archive::with(brokers.to_string(), source)
    }

    #[test]
    fn a_topic_run_spells_the_flags_in_one_order() {
        let a = at(
            "b:9092",
            Source::Topic {
                topic: "t".into(),
                table: "s3://x/t".into(),
                decoder: "fluentbit".into(),
            },
        )
        .group("g")
        .dlq("s3://x/d")
        .flag("roll-interval", "1s")
        .until_end();
        assert_eq!(
            a.to_args(),
            [
                "--brokers",
                "b:9092",
                "--topic",
                "t",
                "--group",
                "g",
                "--table",
                "s3://x/t",
                "--decoder",
                "fluentbit",
                "--dlq-table",
                "s3://x/d",
                "--roll-interval",
                "1s",
                "--until-end"
            ]
        );
    }

    #[test]
    fn a_lake_run_has_no_topic_table_or_decoder() {
        let a = at(
            "b:9092",
            Source::Lake {
                lake: "/l".into(),
                tables_dir: "/d".into(),
            },
        )
        .decoder("cri");
        assert_eq!(
            a.to_args(),
            ["--brokers", "b:9092", "--lake", "/l", "--tables-dir", "/d"]
        );
    }
}
