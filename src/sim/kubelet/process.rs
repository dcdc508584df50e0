//! Pod processes: the netns-holding pause process, containers in private mount namespaces, exec joins.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// One bind mount inside a container: `source` on the host appears at `target`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// What to run and how it sees the world.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    /// Who it runs as (`None`: the simulator's own user, root in CI).
    pub user: Option<Identity>,
}

/// A container's user, as `runAsUser`/`runAsGroup`/`supplementalGroups` (or the image) set it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Drops to `id` (groups first, the uid last, as runc does); between fork and exec.
fn become_user(
    id: &Option<(nix::unistd::Uid, nix::unistd::Gid, Vec<nix::unistd::Gid>)>,
) -> io::Result<()> {
    if let Some((uid, gid, groups)) = id {
        nix::unistd::setgroups(groups).map_err(to_io)?;
        nix::unistd::setgid(*gid).map_err(to_io)?;
        nix::unistd::setuid(*uid).map_err(to_io)?;
    }
    Ok(())
}

/// How a process is isolated.
pub(crate) enum Isolation<'a> {
    /// No namespaces (not root, or unshare unavailable): host paths, host network.
    None,
    /// A new container: joins the pod's network namespace (pause pid), gets a private mount namespace.
    Container {
        pause_pid: Option<i32>,
        mounts: &'a [Mount],
    },
    /// An exec'd process: joins a running container's mount and network namespaces.
    Join { container_pid: i32 },
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn to_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Processes die with the simulator even when it crashes before `shutdown`.
fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes an integer argument and touches no memory.
    let rc = unsafe {
        nix::libc::prctl(
            nix::libc::PR_SET_PDEATHSIG,
            nix::libc::SIGKILL as nix::libc::c_ulong,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Brings the loopback interface of the current network namespace up.
fn loopback_up() -> io::Result<()> {
    use nix::libc;
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own; async-signal-safe after fork.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) < 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let rc = libc::ioctl(fd, libc::SIOCSIFFLAGS as libc::Ioctl, &mut req);
        let e = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 { Err(e) } else { Ok(()) }
    }
}

/// Whether this process may create mount and network namespaces (root with CAP_SYS_ADMIN).
pub(crate) fn namespaces_available() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    let mut cmd = std::process::Command::new("true");
    // SAFETY: the closure only makes syscalls.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET).map_err(to_io)?;
            loopback_up()
        });
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts the pause process owning a new network namespace with `lo` up.
pub(crate) fn spawn_pause() -> io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new("sleep");
    cmd.arg("infinity")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    // SAFETY: the closure only makes syscalls.
    unsafe {
        cmd.pre_exec(|| {
            die_with_parent()?;
            unshare(CloneFlags::CLONE_NEWNET).map_err(to_io)?;
            loopback_up()
        });
    }
    cmd.spawn()
}

/// Where `target` lives on the host once the mounts before it are in place (mount points of nested
/// mounts are created inside the outer mount's source, not on the host).
fn host_path_of(target: &Path, earlier: &[Mount]) -> PathBuf {
    earlier
        .iter()
        .filter(|m| target.starts_with(&m.target))
        .max_by_key(|m| m.target.as_os_str().len())
        .map(|m| {
            m.source
                .join(target.strip_prefix(&m.target).unwrap_or(Path::new("")))
        })
        .unwrap_or_else(|| target.to_path_buf())
}

/// Orders mounts parents-first and creates their mount points. Missing top-level mount points
/// (`/__w`, `/github`...) are created as empty directories on the host: a mount namespace cannot
/// add entries to a directory without writing to it.
pub(crate) fn prepare_mounts(mounts: &[Mount]) -> io::Result<Vec<Mount>> {
    let mut ordered = mounts.to_vec();
    ordered.sort_by_key(|m| m.target.components().count());
    for (i, m) in ordered.iter().enumerate() {
        let at = host_path_of(&m.target, &ordered[..i]);
        if at.symlink_metadata().is_ok() {
            continue;
        }
        if m.source.is_dir() {
            std::fs::create_dir_all(&at)?;
        } else {
            if let Some(parent) = at.parent() {
                std::fs::create_dir_all(parent)?;
            }
            File::create(&at)?;
        }
    }
    Ok(ordered)
}

fn open_ns(pid: i32, kind: &str) -> io::Result<File> {
    File::open(format!("/proc/{pid}/ns/{kind}"))
}

/// Spawns a process with the given isolation. Its process group is its pid.
pub(crate) fn spawn(
    spec: &ProcessSpec,
    iso: Isolation,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> io::Result<tokio::process::Child> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().cloned())
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let wd = spec.working_dir.as_deref().map(cstring).transpose()?;
    // Prepared before the fork: the child only makes syscalls.
    let id = spec.user.as_ref().map(|u| {
        (
            nix::unistd::Uid::from_raw(u.uid),
            nix::unistd::Gid::from_raw(u.gid),
            std::iter::once(u.gid)
                .chain(u.groups.iter().copied())
                .map(nix::unistd::Gid::from_raw)
                .collect::<Vec<_>>(),
        )
    });
    // Like runc, a container's working directory is created when missing; every prefix is
    // prepared before the fork, so the child only makes syscalls.
    let wd_prefixes: Vec<CString> = spec
        .working_dir
        .as_deref()
        .map(|d| {
            d.ancestors()
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .skip(1)
                .map(cstring)
                .collect::<Result<_, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    match iso {
        Isolation::None => {
            if let Some(dir) = spec.working_dir.as_deref().filter(|d| d.is_dir()) {
                cmd.current_dir(dir);
            }
            // SAFETY: the closure only makes syscalls on data prepared before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    die_with_parent()?;
                    become_user(&id)
                });
            }
            cmd.spawn()
        }
        Isolation::Container { pause_pid, mounts } => {
            let ordered = prepare_mounts(mounts)?;
            let plan: Vec<(CString, CString, bool)> = ordered
                .iter()
                .map(|m| Ok((cstring(&m.source)?, cstring(&m.target)?, m.read_only)))
                .collect::<io::Result<_>>()?;
            let mut fds: Vec<nix::libc::c_int> = Vec::with_capacity(plan.len());
            let net = pause_pid.map(|p| open_ns(p, "net")).transpose()?;
            let net_fd: Option<RawFd> = net.as_ref().map(|f| f.as_raw_fd());
            // SAFETY: the closure only makes syscalls on data prepared before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    die_with_parent()?;
                    if let Some(fd) = net_fd {
                        setns(BorrowedFd::borrow_raw(fd), CloneFlags::CLONE_NEWNET)
                            .map_err(to_io)?;
                    }
                    unshare(CloneFlags::CLONE_NEWNS).map_err(to_io)?;
                    mount(
                        None::<&str>,
                        "/",
                        None::<&str>,
                        MsFlags::MS_REC | MsFlags::MS_SLAVE,
                        None::<&str>,
                    )
                    .map_err(to_io)?;
                    // Every source is opened before the first mount and mounted through
                    // /proc/self/fd: an earlier mount (a private /tmp) may cover a later source's path.
                    fds.clear();
                    for (src, _, _) in &plan {
                        let fd =
                            nix::libc::open(src.as_ptr(), nix::libc::O_PATH | nix::libc::O_CLOEXEC);
                        if fd < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        fds.push(fd);
                    }
                    for ((_, dst, ro), fd) in plan.iter().zip(&fds) {
                        let mut buf = [0u8; 32];
                        let src = fd_path(*fd, &mut buf);
                        mount(
                            Some(src),
                            dst.as_c_str(),
                            None::<&str>,
                            MsFlags::MS_BIND | MsFlags::MS_REC,
                            None::<&str>,
                        )
                        .map_err(to_io)?;
                        if *ro {
                            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                            mount(
                                None::<&str>,
                                dst.as_c_str(),
                                None::<&str>,
                                flags,
                                None::<&str>,
                            )
                            .map_err(to_io)?;
                        }
                    }
                    if let Some(dir) = &wd {
                        for p in &wd_prefixes {
                            match nix::unistd::mkdir(
                                p.as_c_str(),
                                nix::sys::stat::Mode::from_bits_truncate(0o755),
                            ) {
                                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                                Err(e) => return Err(to_io(e)),
                            }
                        }
                        nix::unistd::chdir(dir.as_c_str()).map_err(to_io)?;
                    } else {
                        // Without a workingDir a container starts in `/` (no image WORKDIR
                        // here), never in the simulator's own directory, which its mounts may hide.
                        nix::unistd::chdir(c"/").map_err(to_io)?;
                    }
                    become_user(&id)
                });
            }
            let child = cmd.spawn();
            drop(net);
            child
        }
        Isolation::Join { container_pid } => {
            let mnt = open_ns(container_pid, "mnt")?;
            let net = open_ns(container_pid, "net")?;
            let (mnt_fd, net_fd) = (mnt.as_raw_fd(), net.as_raw_fd());
            // SAFETY: the closure only makes syscalls on fds opened before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    die_with_parent()?;
                    setns(BorrowedFd::borrow_raw(net_fd), CloneFlags::CLONE_NEWNET)
                        .map_err(to_io)?;
                    setns(BorrowedFd::borrow_raw(mnt_fd), CloneFlags::CLONE_NEWNS)
                        .map_err(to_io)?;
                    match &wd {
                        Some(dir) => nix::unistd::chdir(dir.as_c_str()).map_err(to_io)?,
                        None => nix::unistd::chdir(c"/").map_err(to_io)?,
                    }
                    become_user(&id)
                });
            }
            let child = cmd.spawn();
            drop((mnt, net));
            child
        }
    }
}

/// Writes `/proc/self/fd/<fd>` into `buf` without allocating (it runs between fork and exec).
fn fd_path(fd: nix::libc::c_int, buf: &mut [u8; 32]) -> &std::ffi::CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd.max(0) as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    std::ffi::CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c"/")
}

/// A container's mount namespace (`mnt:[4026532...]`), held open: while it is held the kernel
/// cannot free the namespace and give its number to a new container, so signalling "every
/// process in it" never reaches another pod's processes (under churn, numbers are reused within
/// milliseconds: a terminating pod's last SIGKILL pass used to kill containers just started).
pub(crate) struct MountNamespace {
    link: PathBuf,
    _held: std::fs::File,
}

/// The mount namespace of `pid`, which identifies a container here; `None` when it is the
/// simulator's own (no isolation), so nothing keyed on it can reach the host.
pub(crate) fn mount_namespace(pid: i32) -> Option<MountNamespace> {
    let held = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
    // The link read through the held file names the namespace it holds, even if `pid` exited.
    let link = std::fs::read_link(format!("/proc/self/fd/{}", held.as_raw_fd())).ok()?;
    let own = std::fs::read_link("/proc/self/ns/mnt").ok()?;
    (link != own).then_some(MountNamespace { link, _held: held })
}

/// Signals every process in mount namespace `ns`: what the container's cgroup would hold,
/// including processes that left their exec's session (`setsid`). Returns how many.
pub(crate) fn signal_mount_namespace(ns: &MountNamespace, signal: Signal) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|p| p == ns.link)
            && nix::sys::signal::kill(Pid::from_raw(pid), signal).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Sends `signal` to a process group; false when it no longer exists.
pub(crate) fn signal_group(pgid: i32, signal: Signal) -> bool {
    killpg(Pid::from_raw(pgid), signal).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths_are_written_without_allocating() {
        let mut buf = [0u8; 32];
        assert_eq!(
            fd_path(7, &mut buf).to_str().expect("utf8"),
            "/proc/self/fd/7"
        );
        assert_eq!(
            fd_path(1234, &mut buf).to_str().expect("utf8"),
            "/proc/self/fd/1234"
        );
    }

    #[test]
    fn nested_mount_points_live_in_the_outer_source() {
        let outer = Mount {
            source: "/state/vol".into(),
            target: "/__w".into(),
            read_only: false,
        };
        assert_eq!(
            host_path_of(Path::new("/__w/_temp"), std::slice::from_ref(&outer)),
            PathBuf::from("/state/vol/_temp")
        );
        assert_eq!(
            host_path_of(Path::new("/__e"), &[outer]),
            PathBuf::from("/__e")
        );
    }
}
