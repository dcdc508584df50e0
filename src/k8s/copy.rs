//! Streaming tar copies between the runner and a pod (or between two pods) over exec: no temporary archive, no per-file round trips; what comes back goes through `crate::archive`'s checking unpacker.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::io::SyncIoBridge;

use super::Kube;
use super::exec::{ExecError, ExecTarget, exec};
use crate::archive::{ArchiveError, MAX_DEPTH, unpack_bounded, write_archive};
pub use crate::archive::{Manifest, PushOptions, Source, Stats};
// Named so by the workspace copy's unit tests (hooks/steps/workspace.rs).
#[cfg(test)]
pub(crate) use crate::archive::Stamp;

/// Buffer between the archive thread and the exec stream: bounds memory whatever the tree size.
const PIPE_BUF: usize = 1024 * 1024;

/// A copy that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// Writing what is sent, or unpacking what came back (a refused entry, too much).
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("tar in pod {pod} exited with code {code}: {stderr}")]
    Tar {
        pod: String,
        code: i32,
        stderr: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> CopyError {
    let what = what.into();
    move |source| CopyError::Io { what, source }
}

/// The pod-side command that unpacks a pushed stream into `dest` (which must exist).
/// `-o`: files get the container user's ownership, not the runner's uid (GNU and busybox tar).
pub(crate) fn extract_command(dest: &str) -> Vec<String> {
    ["tar", "-x", "-o", "-f", "-", "-C", dest]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// An incremental pull: only what changed in the pod since the pull that left mark `since`.
/// The marks are files in `mark_dir` (a directory under the pulled tree that the pull
/// excludes); the runner side keeps the name of the last mark whose pull it accepted, so a
/// failed pull is sent again in full by the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedSince {
    pub mark_dir: String,
    /// The mark of the last accepted pull (`None`: send everything).
    pub since: Option<String>,
    /// The mark this pull leaves, for the next one.
    pub next: String,
}

/// The pod-side command that streams the tree under `src` to stdout, without the top-level
/// entries named in `exclude` (an empty directory gives an empty stream).
///
/// With `changed`, it first leaves the mark `changed.next`, dated 50 ms back (2 s on a
/// filesystem that keeps whole seconds) so that a change in the same clock tick is never
/// missed (what comes back twice is harmless), then, when
/// the mark `changed.since` is there and GNU find and tar are, sends only the entries whose
/// ctime is newer than it: ctime is set by every write, chmod, rename and link, and no
/// process can set it back. Directories go without their contents. Without the mark or the
/// tools it sends everything, as without `changed`.
pub(crate) fn archive_command(
    src: &str,
    exclude: &[&str],
    changed: Option<&ChangedSince>,
) -> Vec<String> {
    let mut skip = String::new();
    let mut prune = String::new();
    for x in exclude {
        let q = crate::script::sh_quote(x);
        skip.push_str(&format!(" [ \"$e\" = {q} ] && continue;"));
        prune.push_str(&format!(" -path ./{q} -prune -o"));
    }
    let full = format!(
        "set --; for e in * .[!.]* ..?*; do {{ [ -e \"$e\" ] || [ -L \"$e\" ]; }} || continue;{skip} set -- \"$@\" \"$e\"; done; [ $# -eq 0 ] && exit 0; exec tar -c -f - -- \"$@\""
    );
    let mut args = vec!["arc-hook-pull".to_string(), src.to_string()];
    let script = match changed {
        None => format!("cd \"$1\" || exit 1; {full}"),
        Some(c) => {
            args.extend([
                c.mark_dir.clone(),
                c.since.clone().unwrap_or_default(),
                c.next.clone(),
            ]);
            format!(
                concat!(
                    "cd \"$1\" || exit 1; m=\"$2\"; since=\"$3\"; next=\"$4\"; ",
                    "mkdir -p \"$m\" 2>/dev/null; ",
                    "t=$(date +%s%N) && case $t in *[!0-9]*|'') false;; esac && t=$((t - 50000000)) && s=${{t%?????????}} ",
                    "&& touch -d \"@$s.${{t#\"$s\"}}\" \"$m/pull-$next\" 2>/dev/null ",
                    "&& case $(stat -c %y \"$m/pull-$next\") in *.000000000*) touch -d \"@$((s - 2))\" \"$m/pull-$next\";; esac ",
                    "|| rm -f \"$m/pull-$next\"; ",
                    "for f in \"$m\"/pull-*; do case \"$f\" in \"$m/pull-$since\"|\"$m/pull-$next\") ;; *) rm -f \"$f\";; esac; done; ",
                    "if [ -n \"$since\" ] && [ -f \"$m/pull-$since\" ] ",
                    "&& find . -maxdepth 0 -cnewer \"$m/pull-$since\" -print0 >/dev/null 2>&1 ",
                    "&& tar --version 2>/dev/null | grep -q 'GNU tar'; then ",
                    "find . -mindepth 1 -maxdepth {deepest}{prune} -cnewer \"$m/pull-$since\" -print0 > \"$m/pull-list\" || exit 3; ",
                    "exec tar -c -f - --null --no-recursion -T \"$m/pull-list\"; fi; {full}"
                ),
                // Deeper entries are refused anyway: one past the bound is enough to say so.
                deepest = MAX_DEPTH + 1,
                prune = prune,
                full = full
            )
        }
    };
    let mut command = vec!["sh".into(), "-c".into(), script];
    command.extend(args);
    command
}

/// Sends `sources` into the pod directory `dest` as one tar stream over one exec.
/// Returns what was sent and the stamps of everything considered (for the next incremental push).
pub async fn push(
    kube: &Kube,
    pod: &str,
    container: &str,
    dest: &str,
    sources: Vec<Source>,
    opts: PushOptions,
) -> Result<(Stats, Manifest), CopyError> {
    let started = SystemTime::now();
    let (writer, reader) = tokio::io::duplex(PIPE_BUF);
    let producer = tokio::task::spawn_blocking(move || {
        let mut record = Manifest::default();
        let out = io::BufWriter::with_capacity(256 * 1024, SyncIoBridge::new(writer));
        let stats = write_archive(out, &sources, &opts, &mut record)?;
        Ok::<_, CopyError>((stats, record))
    });
    let mut stderr = Vec::new();
    let target = ExecTarget {
        pod,
        container,
        what: "tar (copying files into the pod)",
    };
    let code = exec(
        kube,
        target,
        &extract_command(dest),
        Some(reader),
        tokio::io::sink(),
        &mut stderr,
    )
    .await;
    let (stats, record) = settle(producer.await, "archiving", code, pod, &stderr)?;
    tracing::debug!(
        pod,
        dest,
        entries = stats.entries,
        skipped = stats.skipped,
        bytes = stats.bytes,
        elapsed_ms = started.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0),
        "pushed"
    );
    Ok((stats, record))
}

/// Where a pull lands on the runner.
#[derive(Debug, Clone)]
pub struct PullInto {
    /// The local directory.
    pub dest: PathBuf,
    /// With a prefix, entries written are stamped in the returned manifest under `prefix/`.
    pub prefix: Option<String>,
    /// The most the pull may bring back ([`unpack_bounded`]).
    pub max_bytes: u64,
    /// Links already under `dest` (relative to it), judged again with the new ones.
    pub known_links: Vec<PathBuf>,
    /// Only what changed since the last accepted pull ([`archive_command`]).
    pub changed: Option<ChangedSince>,
}

/// Streams the pod directory `src` (minus top-level `exclude`) into the local `dest`,
/// through the checking unpacker. With a `prefix`, entries written are stamped in the returned
/// manifest under `prefix/`.
pub async fn pull(
    kube: &Kube,
    pod: &str,
    container: &str,
    src: &str,
    exclude: &[&str],
    into: PullInto,
) -> Result<(Stats, Manifest), CopyError> {
    let PullInto {
        dest,
        prefix,
        max_bytes,
        known_links,
        changed,
    } = into;
    let (writer, reader) = tokio::io::duplex(PIPE_BUF);
    let consumer = tokio::task::spawn_blocking(move || {
        let mut record = Manifest::default();
        let mut input = io::BufReader::with_capacity(256 * 1024, SyncIoBridge::new(reader));
        let stats = match &prefix {
            Some(p) => unpack_bounded(
                &mut input,
                &dest,
                p,
                Some(&mut record),
                max_bytes,
                &known_links,
            )?,
            None => unpack_bounded(&mut input, &dest, "", None, max_bytes, &known_links)?,
        };
        // tar pads its output past the end-of-archive marker the reader stops at; read it all,
        // or the pod's tar meets a closed pipe and a good copy looks broken.
        io::copy(&mut input, &mut io::sink()).map_err(io_err("reading the end of the archive"))?;
        Ok::<_, CopyError>((stats, record))
    });
    let mut stderr = Vec::new();
    let target = ExecTarget {
        pod,
        container,
        what: "tar (copying files from the pod)",
    };
    let incremental = changed.as_ref().is_some_and(|c| c.since.is_some());
    let command = archive_command(src, exclude, changed.as_ref());
    let mut consumer = consumer;
    let (local, code) = {
        let streaming = exec(
            kube,
            target,
            &command,
            None::<tokio::io::Empty>,
            writer,
            &mut stderr,
        );
        tokio::pin!(streaming);
        tokio::select! {
            code = &mut streaming => (consumer.await, code),
            local = &mut consumer => match local {
                Ok(Ok(v)) => (Ok(Ok(v)), streaming.await),
                // The unpacker refused (a hostile entry, or more than the limit): close the
                // stream at once, so the pod's tar stops on a broken pipe instead of sending
                // the rest (a sparse 1 TiB file would take many minutes of zeros).
                refused => (refused, Ok(0)),
            },
        }
    };
    let (stats, record) = settle(local, "unpacking", code, pod, &stderr)?;
    tracing::debug!(
        pod,
        src,
        entries = stats.entries,
        bytes = stats.bytes,
        incremental = incremental,
        "pulled"
    );
    Ok((stats, record))
}

/// Streams what `archive` writes in one container into `extract` in another, through this
/// process and never its disk: a copy between two of the job's pods, which the runner side
/// never unpacks (what reaches the runner comes through [`pull`] and its checks). An empty
/// stream (nothing to send) starts no extract. Returns the bytes relayed.
pub(crate) async fn relay(
    kube: &Kube,
    from: ExecTarget<'_>,
    archive: &[String],
    to: ExecTarget<'_>,
    extract: &[String],
) -> Result<u64, CopyError> {
    use tokio::io::AsyncReadExt;
    let (writer, mut reader) = tokio::io::duplex(PIPE_BUF);
    let mut from_err = Vec::new();
    let mut to_err = Vec::new();
    let source = exec(
        kube,
        from,
        archive,
        None::<tokio::io::Empty>,
        writer,
        &mut from_err,
    );
    let sink = async {
        let mut first = [0u8; 1];
        let n = reader
            .read(&mut first)
            .await
            .map_err(io_err("reading the relayed archive"))?;
        if n == 0 {
            return Ok::<_, CopyError>(None);
        }
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let input = AsyncReadExt::chain(
            std::io::Cursor::new(first[..n].to_vec()),
            Counted {
                inner: reader,
                count: counted.clone(),
            },
        );
        let code = exec(
            kube,
            to,
            extract,
            Some(input),
            tokio::io::sink(),
            &mut to_err,
        )
        .await;
        Ok(Some((
            code,
            counted.load(std::sync::atomic::Ordering::Relaxed),
        )))
    };
    let (sent, received) = tokio::join!(source, sink);
    // The receiving end's failure explains a broken stream better than the sender's.
    let bytes = match received? {
        None => 0,
        Some((code, bytes)) => {
            let code = code?;
            if code != 0 {
                return Err(CopyError::Tar {
                    pod: to.pod.into(),
                    code,
                    stderr: String::from_utf8_lossy(&to_err).trim().to_string(),
                });
            }
            bytes
        }
    };
    let code = sent?;
    if code != 0 {
        return Err(CopyError::Tar {
            pod: from.pod.into(),
            code,
            stderr: String::from_utf8_lossy(&from_err).trim().to_string(),
        });
    }
    tracing::debug!(from = from.pod, to = to.pod, bytes, "relayed");
    Ok(bytes)
}

/// A reader that counts what passes through it.
struct Counted<R> {
    inner: R,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.count
            .fetch_add(read, std::sync::atomic::Ordering::Relaxed);
        polled
    }
}

/// Combines the local end of a copy with tar's exit in the pod. A local failure explains a
/// broken stream better than the pod's complaint about it, so it wins.
fn settle<T>(
    local: Result<Result<T, CopyError>, tokio::task::JoinError>,
    what: &str,
    code: Result<i32, crate::k8s::exec::ExecError>,
    pod: &str,
    stderr: &[u8],
) -> Result<T, CopyError> {
    let value = local.map_err(|e| CopyError::Io {
        what: what.into(),
        source: io::Error::other(e),
    })??;
    let code = code?;
    if code != 0 {
        return Err(CopyError::Tar {
            pod: pod.into(),
            code,
            stderr: String::from_utf8_lossy(stderr).trim().to_string(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::{archive, tree};
    use crate::archive::unpack;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn pull_command_skips_excluded_and_handles_empty_dirs() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(d.path().join("_runner_file_commands")).expect("mkdir");
        fs::write(
            d.path().join("_runner_file_commands/set_output_1"),
            b"x=1\n",
        )
        .expect("write");
        fs::create_dir_all(d.path().join("_github_home/.cache")).expect("mkdir");
        fs::write(d.path().join(".hidden"), b"h").expect("write");
        let cmd = archive_command(&d.path().to_string_lossy(), &["_github_home"], None);
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dest = tempfile::tempdir().expect("tempdir");
        unpack(&out.stdout[..], dest.path(), "_temp", None).expect("unpack");
        assert_eq!(
            fs::read(dest.path().join("_runner_file_commands/set_output_1")).expect("pulled"),
            b"x=1\n"
        );
        assert!(dest.path().join(".hidden").exists());
        assert!(!dest.path().join("_github_home").exists());

        let empty = tempfile::tempdir().expect("tempdir");
        let cmd = archive_command(&empty.path().to_string_lossy(), &[], None);
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .expect("sh");
        assert!(out.status.success());
        assert!(out.stdout.is_empty());
        let stats = unpack(&out.stdout[..], dest.path(), "", None).expect("empty stream");
        assert_eq!(stats.entries, 0);
    }

    /// Runs the pull's pod-side command here (GNU find and tar, as on the test machines).
    fn pod_archive(dir: &Path, since: Option<&str>, next: &str) -> Vec<String> {
        let changed = ChangedSince {
            mark_dir: "_arc_hook".into(),
            since: since.map(str::to_string),
            next: next.into(),
        };
        let cmd = archive_command(
            &dir.to_string_lossy(),
            &["_github_home", "_arc_hook"],
            Some(&changed),
        );
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut names: Vec<String> = tar::Archive::new(&out.stdout[..])
            .entries()
            .expect("tar")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("name")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_incremental_pull_sends_what_changed_since_the_accepted_mark() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path();
        for dir in ["a", "b", "_arc_hook", "_github_home"] {
            fs::create_dir_all(p.join(dir)).expect("mkdir");
        }
        fs::write(p.join("a/old.txt"), b"1").expect("write");
        fs::write(p.join("b/keep.txt"), b"1").expect("write");
        // Older than the mark's 50 ms of slack (what is younger comes back twice).
        std::thread::sleep(Duration::from_millis(120));
        let full = pod_archive(p, None, "1");
        assert!(full.contains(&"a/old.txt".to_string()), "{full:?}");
        assert!(p.join("_arc_hook/pull-1").is_file(), "the mark is left");
        // A new file, a rename (its mtime kept), a chmod; nothing under the excluded names.
        fs::write(p.join("a/new.txt"), b"2").expect("write");
        fs::rename(p.join("a/old.txt"), p.join("moved.txt")).expect("mv");
        fs::set_permissions(p.join("b/keep.txt"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
        fs::write(p.join("_github_home/cache"), b"x").expect("write");
        assert_eq!(
            pod_archive(p, Some("1"), "2"),
            ["./a/", "./a/new.txt", "./b/keep.txt", "./moved.txt"]
        );
        // Not accepted (the runner kept mark 1): the same again, and mark 1 is kept for it.
        std::thread::sleep(Duration::from_millis(120));
        assert!(pod_archive(p, Some("1"), "3").contains(&"./a/new.txt".to_string()));
        assert!(p.join("_arc_hook/pull-1").is_file());
        assert!(
            !p.join("_arc_hook/pull-2").exists(),
            "marks no pull can use are removed"
        );
        // Accepted: nothing changed since.
        assert_eq!(pod_archive(p, Some("3"), "4"), Vec::<String>::new());
        // An unknown mark (the step removed it, or a new pod): everything.
        assert!(pod_archive(p, Some("9"), "5").contains(&"b/keep.txt".to_string()));
    }

    #[test]
    fn pushed_archive_extracts_with_system_tar() {
        let src = tree();
        let sources = [Source {
            local: src.path().join("repo"),
            name: "repo".into(),
        }];
        let (buf, _, _) = archive(&sources, &PushOptions::default());
        let dest = tempfile::tempdir().expect("tempdir");
        let cmd = extract_command(&dest.path().to_string_lossy());
        let mut child = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("tar");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&buf)
            .expect("feed");
        assert!(child.wait().expect("tar").success());
        assert_eq!(
            fs::metadata(dest.path().join("repo/src/main.sh"))
                .expect("x")
                .mode()
                & 0o777,
            0o755
        );
        assert!(dest.path().join("repo/empty").is_dir());
    }
}
