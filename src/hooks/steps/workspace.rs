//! No-volume mode: the runner's `_work` and externals copied into the job pod's emptyDir, and `_temp` kept in step with it around every step.

use std::path::PathBuf;

use anyhow::Context;

use crate::archive::ArchiveError;
use crate::config::{Config, WorkVolumeMode};
use crate::k8s::Kube;
use crate::k8s::copy::{self, CopyError, Manifest, PushOptions, Source, Stats};
use crate::objects::JOB_CONTAINER_NAME;
use crate::protocol::Envelope;

/// The work volume's mount in the job container.
pub(crate) const POD_WORK: &str = "/__w";
/// The job pod's `_temp`.
pub(crate) const POD_TEMP: &str = "/__w/_temp";
/// Runner-side record of what the pod holds, under `_temp/_arc_hook/` (never sent itself).
pub(crate) const MANIFEST_FILE: &str = "pushed.json";
/// `_temp` entries that stay in the pod: the container's HOME (tool caches can be gigabytes
/// and the runner never reads them), and the hook's own directory (the runner side keeps its
/// manifest there, which a step must not be able to overwrite).
pub(crate) const PULL_EXCLUDE: &[&str] = &["_github_home", crate::hooks::job_state::SCRIPT_DIR];
/// Runner-side name of the pod's mark of the last accepted pull, next to [`MANIFEST_FILE`].
pub(crate) const PULL_MARK_FILE: &str = "pull-mark";
/// The `_work` entries pushed before every step: what the runner writes between steps.
const STEP_ROOTS: &[&str] = &["_temp", "_actions"];

/// Whether this job's pod has an emptyDir work volume the hook fills (decided by prepare_job).
pub(crate) fn copy_mode(envelope: &Envelope, config: &Config) -> bool {
    match &envelope.state {
        Some(s) if !s.job_pod.is_empty() => s.no_volume,
        _ => config.work_volume == WorkVolumeMode::Copy,
    }
}

/// The runner's `_work`, `_temp` and externals directories.
#[derive(Debug, Clone)]
pub(crate) struct RunnerDirs {
    pub work: PathBuf,
    pub temp: PathBuf,
    pub externals: Option<PathBuf>,
    /// `_work/<repo>`, when the runner says (else all of `_work` is pushed).
    pub workspace: Option<PathBuf>,
    /// The most one pull may bring back (`ARC_HOOK_PULL_MAX_BYTES`).
    pub pull_max_bytes: u64,
}

impl RunnerDirs {
    pub(crate) fn from_config(config: &Config) -> anyhow::Result<Self> {
        let work = config.runner_work_dir().context(
            "no-volume mode needs the runner's _work: RUNNER_WORKSPACE or RUNNER_TEMP must be set (the runner sets them)",
        )?;
        let temp = config
            .runner_temp
            .clone()
            .unwrap_or_else(|| work.join("_temp"));
        let externals = work
            .parent()
            .map(|p| p.join("externals"))
            .filter(|p| p.is_dir());
        Ok(Self {
            workspace: config
                .runner_workspace
                .clone()
                .filter(|w| w.parent() == Some(work.as_path())),
            work,
            temp,
            externals,
            pull_max_bytes: config.pull_max_bytes,
        })
    }

    fn manifest_path(&self) -> PathBuf {
        self.temp
            .join(crate::hooks::job_state::SCRIPT_DIR)
            .join(MANIFEST_FILE)
    }

    fn pull_mark_path(&self) -> PathBuf {
        self.temp
            .join(crate::hooks::job_state::SCRIPT_DIR)
            .join(PULL_MARK_FILE)
    }

    fn exclude(&self) -> Vec<String> {
        vec![
            format!(
                "_temp/{}/{PULL_MARK_FILE}",
                crate::hooks::job_state::SCRIPT_DIR
            ),
            format!(
                "_temp/{}/{MANIFEST_FILE}",
                crate::hooks::job_state::SCRIPT_DIR
            ),
            format!(
                "_temp/{}/{MANIFEST_FILE}.tmp",
                crate::hooks::job_state::SCRIPT_DIR
            ),
        ]
    }

    /// What prepare_job sends: externals, the workspace, `_actions`, `_tool`, `_temp`.
    pub(crate) fn initial_sources(&self) -> Vec<Source> {
        let mut s = Vec::new();
        if let Some(e) = &self.externals {
            s.push(Source {
                local: e.clone(),
                name: "externals".into(),
            });
        }
        match &self.workspace {
            Some(ws) => {
                if let Some(name) = ws.file_name().and_then(|n| n.to_str()) {
                    s.push(Source {
                        local: ws.clone(),
                        name: name.to_string(),
                    });
                }
                for r in ["_actions", "_tool"] {
                    s.push(Source {
                        local: self.work.join(r),
                        name: r.into(),
                    });
                }
            }
            None => {
                // Without the workspace's name, send every top-level entry but externals and _temp.
                if let Ok(rd) = std::fs::read_dir(&self.work) {
                    let mut names: Vec<String> = rd
                        .flatten()
                        .filter_map(|e| e.file_name().to_str().map(str::to_string))
                        .filter(|n| n != "externals" && n != "_temp")
                        .collect();
                    names.sort();
                    s.extend(names.into_iter().map(|n| Source {
                        local: self.work.join(&n),
                        name: n,
                    }));
                }
            }
        }
        s.push(self.temp_source());
        s
    }

    fn temp_source(&self) -> Source {
        Source {
            local: self.temp.clone(),
            name: "_temp".into(),
        }
    }

    /// What every step sends (when changed): `_temp` and `_actions`.
    pub(crate) fn step_sources(&self) -> Vec<Source> {
        vec![
            self.temp_source(),
            Source {
                local: self.work.join("_actions"),
                name: "_actions".into(),
            },
        ]
    }
}

/// Only the step roots are compared later; the rest of the first push is not recorded.
fn step_entries(record: Manifest) -> Manifest {
    Manifest {
        entries: record
            .entries
            .into_iter()
            .filter(|(k, _)| {
                STEP_ROOTS
                    .iter()
                    .any(|r| k == r || k.starts_with(&format!("{r}/")))
            })
            .collect(),
    }
}

/// prepare_job: fills the job pod's work volume in one exec.
pub(crate) async fn push_initial(
    kube: &Kube,
    pod: &str,
    dirs: &RunnerDirs,
) -> Result<Stats, CopyError> {
    push_recorded(kube, pod, dirs, None, dirs.initial_sources()).await
}

/// Before a step: sends what changed in `_temp` and `_actions` since the pod last saw them,
/// plus `extra` entries (always).
pub(crate) async fn push_step(
    kube: &Kube,
    pod: &str,
    dirs: &RunnerDirs,
    extra: Vec<Source>,
) -> Result<Stats, CopyError> {
    let since = Manifest::load(&dirs.manifest_path());
    let sources = dirs.step_sources().into_iter().chain(extra).collect();
    push_recorded(kube, pod, dirs, Some(since), sources).await
}

/// Pushes `sources` into the pod's work volume (only what changed `since`, where given) and
/// records what the step roots now hold there, for the next step to compare with.
async fn push_recorded(
    kube: &Kube,
    pod: &str,
    dirs: &RunnerDirs,
    since: Option<Manifest>,
    sources: Vec<Source>,
) -> Result<Stats, CopyError> {
    let opts = PushOptions {
        since,
        exclude: dirs.exclude(),
        record_under: Some(STEP_ROOTS.iter().map(|r| r.to_string()).collect()),
    };
    let (stats, record) =
        copy::push(kube, pod, JOB_CONTAINER_NAME, POD_WORK, sources, opts).await?;
    step_entries(record).save(&dirs.manifest_path())?;
    Ok(stats)
}

/// After a step (also a failed one): brings back what changed in the pod's `_temp` since the
/// last pull the runner side accepted (all of it the first time), file commands included.
pub(crate) async fn pull_step(
    kube: &Kube,
    pod: &str,
    dirs: &RunnerDirs,
) -> Result<Stats, CopyError> {
    let path = dirs.manifest_path();
    let mut manifest = Manifest::load(&path);
    let mark_path = dirs.pull_mark_path();
    let changed = copy::ChangedSince {
        mark_dir: crate::hooks::job_state::SCRIPT_DIR.into(),
        since: read_pull_mark(&mark_path),
        next: new_pull_mark(),
    };
    let next = changed.next.clone();
    let pull = |changed: copy::ChangedSince| {
        copy::pull(
            kube,
            pod,
            JOB_CONTAINER_NAME,
            POD_TEMP,
            PULL_EXCLUDE,
            copy::PullInto {
                dest: dirs.temp.clone(),
                prefix: Some("_temp".into()),
                max_bytes: dirs.pull_max_bytes,
                known_links: temp_links(&manifest),
                changed: Some(changed),
            },
        )
    };
    // A refused pull fails the step with its (first) refusal. The refused entries are removed from
    // the job's own pod (each pull stops at one, so up to MAX_REFUSED_REMOVALS pulls), so they fail
    // only the step that left them; a pull that then passes is kept as any other.
    let mut refusal = None;
    let mut attempt = pull(changed.clone()).await;
    for _ in 0..MAX_REFUSED_REMOVALS {
        let entry = match &attempt {
            Err(CopyError::Archive(ArchiveError::Unsafe { entry, .. })) => entry.clone(),
            _ => break,
        };
        if !forget_refused(kube, pod, &entry).await {
            break;
        }
        if let Err(e) = std::mem::replace(&mut attempt, pull(changed.clone()).await) {
            refusal.get_or_insert(e);
        }
    }
    let (stats, record) = match attempt {
        Ok(done) => done,
        Err(e) => return Err(refusal.unwrap_or(e)),
    };
    // What came back is what the pod has: not worth sending again next step.
    manifest.entries.extend(record.entries);
    manifest.save(&path)?;
    // Only now is the next pull allowed to skip what this one brought back.
    let tmp = mark_path.with_extension("tmp");
    std::fs::write(&tmp, &next)
        .and_then(|()| std::fs::rename(&tmp, &mark_path))
        .map_err(|source| CopyError::Io {
            what: format!("writing {}", mark_path.display()),
            source,
        })?;
    match refusal {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// How many refused entries one step's pull removes from the pod (a pull each) before it leaves
/// the rest for the next step's pull.
const MAX_REFUSED_REMOVALS: usize = 16;

/// Removes a refused entry from the job's own pod (a link or a file, never followed: `rm -f` on
/// the name), so the next pull, which sends again what this one did not accept, does not meet it.
/// Whether it was removed; best effort (if it stays, the next pull refuses it again and says so).
async fn forget_refused(kube: &Kube, pod: &str, entry: &str) -> bool {
    let rel = entry.trim_start_matches("./");
    let rel = rel.strip_prefix("_temp/").unwrap_or(rel);
    if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c == ".." || c.is_empty()) {
        return false;
    }
    let command = vec![
        "rm".to_string(),
        "-f".to_string(),
        "--".to_string(),
        format!("{POD_TEMP}/{rel}"),
    ];
    let target = crate::k8s::exec::ExecTarget {
        pod,
        container: JOB_CONTAINER_NAME,
        what: "removing a refused entry",
    };
    let removed = crate::k8s::exec::exec(
        kube,
        target,
        &command,
        None::<tokio::io::Empty>,
        tokio::io::sink(),
        tokio::io::sink(),
    )
    .await;
    match removed {
        Ok(0) => {
            tracing::debug!(entry = rel, "refused entry removed from the pod");
            true
        }
        other => {
            tracing::debug!(entry = rel, ?other, "refused entry left in the pod");
            false
        }
    }
}

/// The mark of the last accepted pull, when there is a well-formed one.
fn read_pull_mark(path: &std::path::Path) -> Option<String> {
    let mark = std::fs::read_to_string(path).ok()?;
    let mark = mark.trim();
    (!mark.is_empty() && mark.len() <= 40 && mark.bytes().all(|b| b.is_ascii_digit()))
        .then(|| mark.to_string())
}

/// A name for this pull's mark that no earlier pull of the job used.
fn new_pull_mark() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}{}", std::process::id())
}

/// The links under `_temp` the runner side is known to hold (relative to `_temp`).
fn temp_links(manifest: &Manifest) -> Vec<PathBuf> {
    const S_IFMT: u32 = 0o170_000;
    const S_IFLNK: u32 = 0o120_000;
    manifest
        .entries
        .iter()
        .filter(|(_, st)| st.mode & S_IFMT == S_IFLNK)
        .filter_map(|(k, _)| k.strip_prefix("_temp/").map(PathBuf::from))
        .collect()
}

/// The step's exit code, unless its files could not come back: then the failure names both,
/// and a step that passed fails (its outputs are missing).
pub(crate) fn step_outcome<E>(
    step: Result<i32, E>,
    pulled: Option<Result<Stats, CopyError>>,
) -> anyhow::Result<i32>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match (step, pulled) {
        (Ok(code), None | Some(Ok(_))) => Ok(code),
        (Ok(code), Some(Err(e))) => {
            crate::joblog::problem(format_args!(
                "the step exited with code {code}, but copying _temp (its file commands) back from the job pod failed: {e}"
            ));
            Ok(if code == 0 { 1 } else { code })
        }
        (Err(e), None | Some(Ok(_))) => Err(e.into()),
        (Err(e), Some(Err(p))) => Err(anyhow::anyhow!(
            "{e}; copying _temp (its file commands) back from the job pod also failed: {p}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::exec::ExecError;
    use std::path::Path;

    fn dirs(home: &Path) -> RunnerDirs {
        let work = home.join("_work");
        for d in [
            "_work/repo/repo",
            "_work/_actions/a/b",
            "_work/_tool",
            "_work/_temp/_arc_hook",
            "externals/node20",
        ] {
            std::fs::create_dir_all(home.join(d)).expect("mkdir");
        }
        let config = Config::from_lookup(|k| match k {
            "RUNNER_WORKSPACE" => Some(work.join("repo").to_string_lossy().to_string()),
            "RUNNER_TEMP" => Some(work.join("_temp").to_string_lossy().to_string()),
            _ => None,
        })
        .expect("config");
        RunnerDirs::from_config(&config).expect("dirs")
    }

    #[test]
    fn initial_push_sends_externals_workspace_actions_tool_temp() {
        let home = tempfile::tempdir().expect("tempdir");
        let d = dirs(home.path());
        let names: Vec<String> = d.initial_sources().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["externals", "repo", "_actions", "_tool", "_temp"]);
        assert_eq!(
            d.step_sources()
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<_>>(),
            ["_temp", "_actions"]
        );
        assert!(
            d.exclude()
                .contains(&"_temp/_arc_hook/pushed.json".to_string())
        );
    }

    #[test]
    fn only_step_roots_are_remembered() {
        let mut m = Manifest::default();
        let st = copy::Stamp {
            size: 1,
            mtime_ns: 1,
            mode: 0o644,
        };
        for k in [
            "_temp",
            "_temp/x",
            "_actions/a",
            "repo/file",
            "_tempest",
            "externals/node",
        ] {
            m.entries.insert(k.into(), st);
        }
        let kept: Vec<String> = step_entries(m).entries.into_keys().collect();
        assert_eq!(kept, ["_actions/a", "_temp", "_temp/x"]);
    }

    fn broken() -> ExecError {
        ExecError::Broken {
            what: "the step".into(),
            pod: "p".into(),
            message: "reset".into(),
        }
    }

    fn pull_failed() -> CopyError {
        CopyError::Tar {
            pod: "p".into(),
            code: 2,
            stderr: "tar: short read".into(),
        }
    }

    #[test]
    fn a_failed_pull_never_hides_the_step_code() {
        assert_eq!(step_outcome::<ExecError>(Ok(3), None).expect("code"), 3);
        assert_eq!(
            step_outcome::<ExecError>(Ok(0), Some(Ok(Stats::default()))).expect("code"),
            0
        );
        assert_eq!(
            step_outcome::<ExecError>(Ok(3), Some(Err(pull_failed()))).expect("code"),
            3
        );
        // A passing step whose outputs are lost must not pass.
        assert_eq!(
            step_outcome::<ExecError>(Ok(0), Some(Err(pull_failed()))).expect("code"),
            1
        );
        let e = step_outcome(Err(broken()), Some(Err(pull_failed()))).expect_err("both");
        let msg = e.to_string();
        assert!(msg.contains("lost the connection to pod p"), "{msg}");
        assert!(msg.contains("tar: short read"), "{msg}");
    }
}
