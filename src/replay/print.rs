//! How `arc-hook replay` shows a replay: a line per event as it happens, then the summary table.

use std::io::{self, Write};

use super::report::{Event, FileCommandNote, ReplayReport};
use crate::sim::Injected;

/// Writes the line(s) `arc-hook replay` shows for `event`.
pub fn event(out: &mut impl Write, event: &Event) -> io::Result<()> {
    match event {
        Event::UsingCluster(info) => writeln!(
            out,
            "replay: --cluster: using context {:?}, server {}, namespace {}",
            info.context, info.server, info.namespace
        ),
        Event::UsingSimulator { url } => writeln!(
            out,
            "replay: using the embedded simulator at {url} (--cluster plays against your cluster)"
        ),
        Event::RunnerHome(dir) => writeln!(
            out,
            "replay: the runner's home is {} (the runner pod's {}; --workdir to choose another)",
            dir.display(),
            super::target::RUNNER_HOME_ANNOTATION
        ),
        Event::Skipped { file, command } => writeln!(
            out,
            "── {file}: {command} skipped (an earlier command failed)"
        ),
        Event::Started { file, command } => writeln!(out, "── {file}: {command}"),
        Event::Finished {
            file,
            command,
            exit_code,
            seconds,
        } => writeln!(
            out,
            "── {file}: {command} exited {exit_code} ({seconds:.2}s)"
        ),
        Event::Signalled {
            file,
            signal,
            seconds,
        } => writeln!(
            out,
            "── {file}: cancelled: {signal} to the hook after {seconds:.2}s (cancelAfterSeconds)"
        ),
        Event::JobPod { name, is_alpine } => {
            writeln!(out, "   job pod {name}, isAlpine {is_alpine}")
        }
        Event::WorkspaceOwner { uid, gid } => writeln!(
            out,
            "   the workspace goes to the job's user {uid}:{gid}, as its checkout step would have left it"
        ),
        Event::FileCommand(note) => file_command(out, note),
    }
}

fn file_command(out: &mut impl Write, note: &FileCommandNote) -> io::Result<()> {
    match note {
        // One line per entry: a multi-line value shows its newlines escaped.
        FileCommandNote::Entry { kind, name, value } => {
            writeln!(out, "   {kind}: {name}={}", value.replace('\n', "\\n"))
        }
        FileCommandNote::Unreadable { kind, error } => {
            writeln!(out, "   {kind}: unreadable ({error})")
        }
        FileCommandNote::PathEntry(line) => writeln!(out, "   GITHUB_PATH: {line}"),
        FileCommandNote::Size { kind, bytes } => writeln!(out, "   {kind}: {bytes} bytes"),
    }
}

/// Writes the summary: one row per command, then what the simulator injected, if anything.
pub fn summary(out: &mut impl Write, report: &ReplayReport) -> io::Result<()> {
    writeln!(out, "── summary")?;
    for p in &report.played {
        let result = if p.skipped {
            "skipped".to_string()
        } else {
            format!("exit {}", p.exit_code)
        };
        writeln!(
            out,
            "   {:<32} {:<20} {:>9} {:>7.2}s",
            p.file, p.command, result, p.seconds
        )?;
    }
    let injected = &report.injected;
    if *injected != Injected::default() {
        writeln!(
            out,
            "   the simulator injected {} API errors and {} exec stream cuts (sim.json faults)",
            injected.errors, injected.exec_cuts
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::report::Played;

    fn shown(events: &[Event]) -> String {
        let mut out = Vec::new();
        for e in events {
            event(&mut out, e).expect("writes to a Vec");
        }
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn events_read_as_before() {
        let text = shown(&[
            Event::UsingSimulator {
                url: "http://127.0.0.1:4000".into(),
            },
            Event::Started {
                file: "01-prepare_job.json".into(),
                command: "prepare_job".into(),
            },
            Event::Finished {
                file: "01-prepare_job.json".into(),
                command: "prepare_job".into(),
                exit_code: 0,
                seconds: 0.204,
            },
            Event::JobPod {
                name: "arc-runner-workflow".into(),
                is_alpine: false,
            },
            Event::FileCommand(FileCommandNote::Entry {
                kind: "GITHUB_ENV".into(),
                name: "NOTES".into(),
                value: "line one\nline two".into(),
            }),
            Event::FileCommand(FileCommandNote::PathEntry("/opt/tool/bin".into())),
            Event::FileCommand(FileCommandNote::Unreadable {
                kind: "GITHUB_OUTPUT".into(),
                error: "bad".into(),
            }),
            Event::FileCommand(FileCommandNote::Size {
                kind: "GITHUB_STEP_SUMMARY".into(),
                bytes: 12,
            }),
            Event::Skipped {
                file: "03-never-runs.json".into(),
                command: "run_script_step".into(),
            },
            Event::UsingCluster(crate::replay::target::ClusterInfo {
                context: "kind-ci".into(),
                server: "https://127.0.0.1:6443/".into(),
                namespace: "arc-runners".into(),
            }),
        ]);
        assert_eq!(
            text,
            "replay: using the embedded simulator at http://127.0.0.1:4000 (--cluster plays against your cluster)\n\
             ── 01-prepare_job.json: prepare_job\n\
             ── 01-prepare_job.json: prepare_job exited 0 (0.20s)\n   \
             job pod arc-runner-workflow, isAlpine false\n   \
             GITHUB_ENV: NOTES=line one\\nline two\n   \
             GITHUB_PATH: /opt/tool/bin\n   \
             GITHUB_OUTPUT: unreadable (bad)\n   \
             GITHUB_STEP_SUMMARY: 12 bytes\n\
             ── 03-never-runs.json: run_script_step skipped (an earlier command failed)\n\
             replay: --cluster: using context \"kind-ci\", server https://127.0.0.1:6443/, namespace arc-runners\n"
        );
    }

    #[test]
    fn the_summary_is_a_table_and_names_injected_faults() {
        let row = |file: &str, command: &str, exit_code, seconds, skipped| Played {
            file: file.into(),
            command: command.into(),
            exit_code,
            seconds,
            skipped,
        };
        let report = ReplayReport {
            played: vec![
                row("01-prepare_job.json", "prepare_job", 0, 0.2, false),
                row("02-check.json", "run_script_step", 3, 1.5, false),
                row("03-never-runs.json", "run_script_step", 0, 0.0, true),
            ],
            exit_code: 3,
            injected: Injected {
                errors: 9,
                exec_cuts: 3,
                log_cuts: 0,
            },
        };
        let mut out = Vec::new();
        summary(&mut out, &report).expect("writes to a Vec");
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            "── summary\n\
             \x20  01-prepare_job.json              prepare_job             exit 0    0.20s\n\
             \x20  02-check.json                    run_script_step         exit 3    1.50s\n\
             \x20  03-never-runs.json               run_script_step        skipped    0.00s\n\
             \x20  the simulator injected 9 API errors and 3 exec stream cuts (sim.json faults)\n"
        );
        let quiet = ReplayReport {
            injected: Injected::default(),
            ..report
        };
        let mut out = Vec::new();
        summary(&mut out, &quiet).expect("writes to a Vec");
        assert!(!String::from_utf8_lossy(&out).contains("injected"));
    }
}
