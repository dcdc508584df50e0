//! How steps run, apart from the commands that ask for them: a script as one detached process in
//! the job container (`detached`), a container step as an ephemeral container of the job pod
//! (`ephemeral`), as its own batch Job (`job`) or as a bare pod of its own (`step_pod`), an
//! action's image built from its Dockerfile first (`build_image`), and, in no-volume mode, the
//! runner's files carried in and out (`workspace`); a cancelled step stopped where it runs
//! (`cancel`).

pub(crate) mod build_image;
pub(crate) mod cancel;
pub(crate) mod detached;
pub(crate) mod ephemeral;
pub(crate) mod job;
pub(crate) mod step_pod;
pub(crate) mod workspace;
