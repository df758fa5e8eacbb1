//! Running the `fmseg` binary in tests (after fd's `TestEnv`): [`Fmseg`] builds the command,
//! [`Run`] holds what came back and asserts on it, printing the whole command, its exit status,
//! stdout and stderr when an assertion fails.
//!
//! ```ignore
//! Fmseg::new().args(["series", dir]).run().success();
//! Fmseg::new().arg("segment").arg(&input).run().fails_naming(&["t1.nii", "truncated"]);
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::process::{Child, Command, Output, Stdio};

/// Exit statuses as ARCHITECTURE.md ("Exit statuses") documents them; spelled out here rather
/// than taken from `fmseg::cli::exit`, so that a change there fails the tests.
pub const SUCCESS: i32 = 0;
/// The command failed: the message on stderr names the file and the problem.
pub const FAILURE: i32 = 1;
/// The command line could not be parsed.
pub const USAGE: i32 = 2;
/// `batch`: some series failed, the others are done.
pub const SOME_FAILED: i32 = 3;

/// The `fmseg` binary as a test runs it. `FMSEG_WEIGHTS` is removed from its environment, so
/// a developer's own setting cannot change a test; a test that wants it sets it with
/// [`Fmseg::env`].
pub struct Fmseg {
    cmd: Command,
}

impl Fmseg {
    pub fn new() -> Fmseg {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fmseg"));
        cmd.env_remove("FMSEG_WEIGHTS");
        Fmseg { cmd }
    }

    /// The binary started by another program: `program prefix.. fmseg args..`, e.g. under a
    /// memory limit with `Fmseg::wrapped("sh", ["-c", "ulimit -v 4194304; exec \"$@\"", "sh"])`.
    pub fn wrapped<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, prefix: impl IntoIterator<Item = S>) -> Fmseg {
        let mut cmd = Command::new(program);
        cmd.args(prefix).arg(env!("CARGO_BIN_EXE_fmseg")).env_remove("FMSEG_WEIGHTS");
        Fmseg { cmd }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Where stdout goes; [`Fmseg::run`] captures it unless this is set.
    pub fn stdout(mut self, s: impl Into<Stdio>) -> Self {
        self.cmd.stdout(s);
        self
    }

    /// Where stderr goes; [`Fmseg::run`] captures it unless this is set.
    pub fn stderr(mut self, s: impl Into<Stdio>) -> Self {
        self.cmd.stderr(s);
        self
    }

    /// Run to the end. The command and what came back go to the test's (captured) output.
    pub fn run(mut self) -> Run {
        Run::of(&mut self.cmd)
    }

    /// Start without waiting (for tests that kill it); stdout and stderr are inherited unless set.
    pub fn spawn(mut self) -> Child {
        self.cmd.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.cmd))
    }
}

/// A finished run of `fmseg` (or of any program, through [`Run::of`]). Its `Display` is the
/// whole story: the command, the exit status, stdout and stderr.
pub struct Run {
    command: String,
    output: Output,
}

impl Run {
    /// Run `cmd` to the end (stdout and stderr captured unless set), and print what came back.
    pub fn of(cmd: &mut Command) -> Run {
        let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let run = Run { command: format!("{cmd:?}"), output };
        eprintln!("{run}");
        run
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The exit status; `None` when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// The raw output (stdout as bytes, for `serde_json::from_slice`).
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Exit status 0.
    #[track_caller]
    pub fn success(self) -> Self {
        self.exit_code(SUCCESS)
    }

    /// Exit status `code`.
    #[track_caller]
    pub fn exit_code(self, code: i32) -> Self {
        assert_eq!(self.code(), Some(code), "expected exit status {code}:\n{self}");
        self
    }

    /// The failure contract of every command: exit status 1, nothing on stdout, each needle
    /// (the file, the problem) on stderr, and no panic.
    #[track_caller]
    pub fn fails_naming(self, needles: &[&str]) -> Self {
        self.refused(FAILURE, needles)
    }

    /// A usage error: exit status 2, nothing on stdout, each needle on stderr, no panic.
    #[track_caller]
    pub fn usage_error(self, needles: &[&str]) -> Self {
        self.refused(USAGE, needles)
    }

    #[track_caller]
    fn refused(self, code: i32, needles: &[&str]) -> Self {
        let run = self.exit_code(code);
        assert!(run.output.stdout.is_empty(), "stdout must be empty on an error:\n{run}");
        assert!(!run.stderr().contains("panicked"), "a panic, not an error message:\n{run}");
        run.stderr_has(needles)
    }

    /// Each needle on stderr.
    #[track_caller]
    pub fn stderr_has(self, needles: &[&str]) -> Self {
        let err = self.stderr();
        for n in needles {
            assert!(err.contains(n), "stderr lacks {n:?}:\n{self}");
        }
        self
    }

    /// Each needle on stdout.
    #[track_caller]
    pub fn stdout_has(self, needles: &[&str]) -> Self {
        let out = self.stdout();
        for n in needles {
            assert!(out.contains(n), "stdout lacks {n:?}:\n{self}");
        }
        self
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "$ {}\n{}\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.output.status,
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}
