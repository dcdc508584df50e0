//! The shell script that starts a step in the job container: every value single-quoted, so no value is ever expanded, split or re-interpreted.

use std::collections::BTreeMap;

/// A step the script cannot express.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum ScriptError {
    #[error(
        "args.environmentVariables: invalid environment variable name {0:?} (use printable ASCII characters other than '=')"
    )]
    EnvName(String),
    #[error(
        "args.environmentVariables.{0}: the value holds a NUL byte, which no process environment can carry"
    )]
    NulByte(String),
    #[error("args.entryPoint: missing")]
    NoEntryPoint,
    #[error("args.entryPoint: {0:?} contains '=', which env(1) would take for a variable")]
    EntryPointEquals(String),
}

/// `'value'` with every `'` written as `'\''`: POSIX sh gives back the exact bytes.
pub(crate) fn sh_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// What run_script_step runs.
pub(crate) struct StepCommand<'a> {
    pub entry_point: &'a str,
    pub entry_point_args: &'a [String],
    pub environment: &'a BTreeMap<String, String>,
    pub prepend_path: &'a [String],
    pub working_directory: Option<&'a str>,
}

/// Builds the script: removes itself, enters the working directory, puts `prependPath` before
/// PATH, then `exec env --` with each variable and argument as one quoted word.
pub(crate) fn step_script(step: &StepCommand<'_>) -> Result<String, ScriptError> {
    if step.entry_point.is_empty() {
        return Err(ScriptError::NoEntryPoint);
    }
    if step.entry_point.contains('=') {
        return Err(ScriptError::EntryPointEquals(step.entry_point.to_string()));
    }
    for k in step.environment.keys() {
        // The same rule as container env (build::container_env); `env --` below lets a name
        // start with '-'.
        if !crate::validate::env_var_name(k).is_empty() {
            return Err(ScriptError::EnvName(k.clone()));
        }
    }
    if let Some((k, _)) = step.environment.iter().find(|(_, v)| v.contains('\0')) {
        return Err(ScriptError::NulByte(k.clone()));
    }
    let mut s = String::from(
        "# written by arc-hook: runs one step; removes itself so no value outlives the step's start\n",
    );
    s.push_str("rm -f -- \"$0\" 2>/dev/null\n");
    if let Some(wd) = step.working_directory.filter(|w| !w.is_empty()) {
        s.push_str(&format!(
            "cd -- {q} || {{ echo \"arc-hook: cannot enter working directory \"{q} >&2; exit 1; }}\n",
            q = sh_quote(wd)
        ));
    }
    let prepend = step
        .prepend_path
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(":");
    let mut env_words = Vec::with_capacity(step.environment.len());
    for (k, v) in step.environment {
        if k == "PATH" && !prepend.is_empty() {
            env_words.push(sh_quote(&format!("PATH={prepend}:{v}")));
        } else {
            env_words.push(sh_quote(&format!("{k}={v}")));
        }
    }
    if !prepend.is_empty() && !step.environment.contains_key("PATH") {
        s.push_str(&format!(
            "PATH={}\"${{PATH:+:$PATH}}\"\nexport PATH\n",
            sh_quote(&prepend)
        ));
    }
    s.push_str("exec env --");
    for w in env_words {
        s.push_str(" \\\n  ");
        s.push_str(&w);
    }
    s.push_str(" \\\n  ");
    s.push_str(&sh_quote(step.entry_point));
    for a in step.entry_point_args {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(script: &str) -> std::process::Output {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("step.sh");
        std::fs::write(&path, script).expect("write script");
        let out = Command::new("sh")
            .arg(&path)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .expect("sh runs");
        assert!(!path.exists(), "the script removes itself");
        out
    }

    #[test]
    fn quoting_is_exact() {
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn hostile_values_arrive_byte_exact() {
        let nasty = [
            ("QUOTES", "it's \"quoted\" and 'single'"),
            ("DOLLARS", "$HOME ${PATH} $(id -u) $$"),
            ("BACKTICKS", "`uname -a` \\`x\\`"),
            ("NEWLINES", "one\ntwo\n\ttab\r\nend\n"),
            ("UNICODE", "héllo ✓ 日本語 🚀"),
            ("PERCENT", "100% %PATH% %s"),
            ("BACKSLASH", "C:\\path\\n"),
            ("EMPTY", ""),
            ("my.dotted-name", "ok"),
        ];
        let env: BTreeMap<String, String> = nasty
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = vec!["-c".to_string(), "for k in QUOTES DOLLARS BACKTICKS NEWLINES UNICODE PERCENT BACKSLASH EMPTY; do printf '%s=' \"$k\"; printenv \"$k\" | od -An -c | tr -s ' \\n' ' '; echo; done".to_string()];
        let script = step_script(&StepCommand {
            entry_point: "sh",
            entry_point_args: &args,
            environment: &env,
            prepend_path: &[],
            working_directory: None,
        })
        .expect("valid step");
        let out = run(&script);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Compare against the same values dumped by a process that got them without any shell.
        for (k, v) in &nasty[..8] {
            let expected = Command::new("sh")
                .arg("-c")
                .arg("printenv \"$1\" | od -An -c | tr -s ' \\n' ' '")
                .arg("sh")
                .arg(k)
                .env(k, v)
                .output()
                .expect("reference");
            let line = format!("{k}={}", String::from_utf8_lossy(&expected.stdout));
            assert!(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l == line),
                "{k}: want {line:?} in\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        // Names a shell cannot hold (dash drops them) still reach the program env(1) starts.
        let args = vec!["my.dotted-name".to_string()];
        let script = step_script(&StepCommand {
            entry_point: "printenv",
            entry_point_args: &args,
            environment: &env,
            prepend_path: &[],
            working_directory: None,
        })
        .expect("valid step");
        assert_eq!(String::from_utf8_lossy(&run(&script).stdout), "ok\n");
    }

    #[test]
    fn args_keep_their_spaces_and_path_is_prepended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = vec![
            "-c".to_string(),
            "printf '[%s]' \"$@\"; echo; echo \"$PATH\"; pwd".to_string(),
            "x".to_string(),
            "a b".to_string(),
            "*".to_string(),
        ];
        let wd = dir.path().to_string_lossy().to_string();
        let script = step_script(&StepCommand {
            entry_point: "sh",
            entry_point_args: &args,
            environment: &BTreeMap::new(),
            prepend_path: &["/opt/first".to_string(), "/opt/second".to_string()],
            working_directory: Some(&wd),
        })
        .expect("valid");
        let out = run(&script);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0], "[a b][*]");
        assert_eq!(lines[1], "/opt/first:/opt/second:/usr/bin:/bin");
        assert_eq!(
            std::fs::canonicalize(lines[2]).expect("dir"),
            std::fs::canonicalize(dir.path()).expect("dir")
        );
    }

    #[test]
    fn exit_code_and_missing_directory() {
        let args = vec!["-c".to_string(), "exit 3".to_string()];
        let env = BTreeMap::new();
        let step = StepCommand {
            entry_point: "sh",
            entry_point_args: &args,
            environment: &env,
            prepend_path: &[],
            working_directory: None,
        };
        assert_eq!(
            run(&step_script(&step).expect("valid")).status.code(),
            Some(3)
        );
        let step = StepCommand {
            working_directory: Some("/nonexistent/dir"),
            ..step
        };
        let out = run(&step_script(&step).expect("valid"));
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("arc-hook: cannot enter working directory /nonexistent/dir")
        );
    }

    #[test]
    fn path_in_env_gets_the_prepend() {
        let env = BTreeMap::from([("PATH".to_string(), "/custom/bin:/bin".to_string())]);
        let args = vec!["-c".to_string(), "echo \"$PATH\"".to_string()];
        let script = step_script(&StepCommand {
            entry_point: "/bin/sh",
            entry_point_args: &args,
            environment: &env,
            prepend_path: &["/tool".to_string()],
            working_directory: None,
        })
        .expect("valid");
        assert_eq!(
            String::from_utf8_lossy(&run(&script).stdout),
            "/tool:/custom/bin:/bin\n"
        );
    }

    #[test]
    fn invalid_names_are_refused() {
        let env = BTreeMap::from([("BAD=NAME".to_string(), "v".to_string())]);
        let e = step_script(&StepCommand {
            entry_point: "sh",
            entry_point_args: &[],
            environment: &env,
            prepend_path: &[],
            working_directory: None,
        })
        .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "args.environmentVariables: invalid environment variable name \"BAD=NAME\" (use printable ASCII characters other than '=')"
        );
        // A leading '-' is a valid name for the API and reaches the step through `env --`.
        let env = BTreeMap::from([("-LEAD".to_string(), "v".to_string())]);
        let script = step_script(&StepCommand {
            entry_point: "env",
            entry_point_args: &[],
            environment: &env,
            prepend_path: &[],
            working_directory: None,
        })
        .expect("accepted");
        let out = String::from_utf8_lossy(&run(&script).stdout).to_string();
        assert!(out.lines().any(|l| l == "-LEAD=v"), "{out}");
    }
}
