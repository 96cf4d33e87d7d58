//! Where replies go when `OUTPUT_FILE` is set: JSON lines written under a
//! temporary name beside the final one, and moved into place only once
//! every row has succeeded. A failed, killed or stopped job leaves nothing
//! under the final name, so a reader never sees half an output.
//!
//! A temporary name is unique to its run, `.NAME.<16 hex digits>.tmp`, so
//! that what a killed run left can never block the next: a job is PID 1 in
//! every container, so a name made of the process id repeats from run to
//! run. Each run first removes the leftovers of earlier runs for its own
//! destination: files named exactly so, or `.NAME.<digits>.tmp` as earlier
//! versions named them, and nothing else.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::{random, signals};

pub struct AtomicFile {
    /// The setting that named the destination, for messages.
    setting: &'static str,
    temp: PathBuf,
    destination: PathBuf,
    writer: Option<BufWriter<File>>,
    committed: bool,
}

impl AtomicFile {
    /// Starts writing what will become `destination`, the file that
    /// `setting` names.
    pub fn create(setting: &'static str, destination: &Path) -> Result<AtomicFile, Error> {
        let Some(name) = destination.file_name() else {
            return Err(Error::CantCreate {
                path: format!("{setting} {}", destination.display()),
                cause: std::io::Error::other("the path names no file"),
            });
        };
        remove_leftovers(destination, name);
        let mut temp_name = OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{:016x}.tmp", random::number()));
        let temp = beside(destination, &temp_name);
        let mut file = AtomicFile {
            setting,
            temp,
            destination: destination.to_owned(),
            writer: None,
            committed: false,
        };
        // Registered first: a stop right after the file is made removes it.
        signals::remove_on_stop(file.temp.clone());
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file.temp)
            .map_err(|cause| Error::CantCreate {
                path: file.describe_temp(),
                cause,
            })?;
        file.writer = Some(BufWriter::with_capacity(64 * 1024, created));
        Ok(file)
    }

    /// The final name.
    pub fn destination(&self) -> &Path {
        &self.destination
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let result = match &mut self.writer {
            Some(writer) => writer.write_all(bytes),
            None => Ok(()),
        };
        result.map_err(|cause| Error::Io {
            what: format!("writing {}", self.describe_temp()),
            cause,
        })
    }

    /// Flushes, syncs and moves the file into place.
    pub fn commit(mut self) -> Result<(), Error> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .map_err(|cause| Error::Io {
                what: format!("writing {}", self.describe_temp()),
                cause,
            })?;
        if let Err(cause) = std::fs::rename(&self.temp, &self.destination) {
            self.copy_into_place().map_err(|copy| Error::Io {
                what: format!(
                    "moving {} into place: rename failed ({cause}), and so did copying it",
                    self.describe_temp()
                ),
                cause: copy,
            })?;
        }
        self.committed = true;
        signals::leave_on_stop(&self.temp);
        Ok(())
    }

    /// Snowflake stage volumes stream each file to cloud storage: they
    /// cannot rename, and need not allow chmod either. There the finished
    /// file is copied to its final name in one sequential write, which they
    /// do support, and the temporary removed. The copy is of bytes only:
    /// `std::fs::copy` would also copy permissions (fchmod), and fail.
    ///
    /// While the copy runs, the destination is half-written: a failure or a
    /// stop removes it, so that it is complete or absent. Such a filesystem
    /// may refuse to remove a file that is open, as FUSE does where it
    /// cannot rename, so a stop waits until the copy has let go of both
    /// files (the write under way, or the final sync, which on a stage
    /// volume may upload), and the job then stops itself.
    fn copy_into_place(&self) -> std::io::Result<()> {
        log::debug!(
            "Cannot rename into place; copying to {}",
            self.destination.display()
        );
        signals::remove_on_stop(self.destination.clone());
        signals::defer_stops();
        let copied = File::open(&self.temp).and_then(|mut source| {
            let mut destination = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.destination)?;
            stream(&mut source, &mut destination)?;
            destination.sync_all()
        });
        let stopped = signals::resume_stops();
        if copied.is_err() || stopped.is_some() {
            let _ = remove_closed(&self.destination);
        }
        signals::leave_on_stop(&self.destination);
        if let Some(signal) = stopped {
            signals::stop(signal);
        }
        copied?;
        // The file is in place, whole: a temporary file left behind is the
        // next run's to remove, not a reason to fail this one.
        if let Err(cause) = remove_closed(&self.temp) {
            log::warn!("Cannot remove {}: {cause}", self.temp.display());
        }
        Ok(())
    }

    fn describe_temp(&self) -> String {
        format!(
            "{}, the temporary file of {} {}",
            self.temp.display(),
            self.setting,
            self.destination.display()
        )
    }
}

/// Removes a file that this job has closed. A FUSE filesystem that cannot
/// rename, as a stage volume, refuses to remove a file it counts as open,
/// and it hears of a close only after `close` has returned: a refusal is
/// tried again for half a second before it counts.
pub fn remove_closed(path: &Path) -> std::io::Result<()> {
    let mut pause = Duration::from_millis(1);
    loop {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound && pause < Duration::from_millis(512) => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            removed => return removed,
        }
    }
}

/// `name` in the directory of `destination`, a path that names a file:
/// `with_file_name`, by `join`, which the leftovers' paths link anyway.
fn beside(destination: &Path, name: &OsStr) -> PathBuf {
    destination.parent().unwrap_or(Path::new("")).join(name)
}

/// Removes what earlier runs left for `destination` (its file name is
/// `name`), logging each; a leftover that cannot be removed is only
/// reported, since it no longer blocks anything.
fn remove_leftovers(destination: &Path, name: &OsStr) {
    let directory = match destination.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // A directory that cannot be read cannot be written either: creating
    // the temporary file reports that, naming it.
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let file_name = entry.file_name();
        // Only regular files: never a directory, or what a link points at.
        if !is_leftover(name, &file_name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!(
                "Removed {}, left by an earlier run that did not finish",
                path.display()
            ),
            Err(cause) => log::warn!(
                "Cannot remove {}, left by an earlier run that did not finish: {cause}",
                path.display()
            ),
        }
    }
}

/// Whether `candidate` is a temporary name this job gives, or gave, the
/// file `name`: `.NAME.` then 16 lowercase hex digits, or a process id,
/// then `.tmp`.
fn is_leftover(name: &OsStr, candidate: &OsStr) -> bool {
    let unique = candidate
        .as_bytes()
        .strip_prefix(b".")
        .and_then(|rest| rest.strip_prefix(name.as_bytes()))
        .and_then(|rest| rest.strip_prefix(b"."))
        .and_then(|rest| rest.strip_suffix(b".tmp"));
    match unique {
        Some(hex) if hex.len() == 16 => hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        Some(pid) => (1..=10).contains(&pid.len()) && pid.iter().all(u8::is_ascii_digit),
        None => false,
    }
}

/// Plain reads and writes in order: no `copy_file_range` or `sendfile`,
/// whose support a streaming filesystem need not have. Gives up when a
/// stop waits.
fn stream(source: &mut File, destination: &mut File) -> std::io::Result<()> {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        if signals::stop_deferred() {
            return Err(std::io::Error::other("stopped by a signal"));
        }
        match source.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => destination.write_all(&buffer[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            // Closed first, its buffer dropped unwritten: a stage volume
            // would refuse to remove it open.
            if let Some(writer) = self.writer.take() {
                drop(writer.into_parts());
            }
            let _ = remove_closed(&self.temp);
            signals::leave_on_stop(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_go_beside_their_destination() {
        let name = OsStr::new(".out.jsonl.0123456789abcdef.tmp");
        for destination in [
            "out.jsonl",
            "/data/out.jsonl",
            "./out.jsonl",
            "../out.jsonl",
            "dir/out.jsonl/",
            "a//b/./out.jsonl",
            "/out.jsonl",
        ] {
            let destination = Path::new(destination);
            assert_eq!(
                beside(destination, name),
                destination.with_file_name(name),
                "{destination:?}"
            );
        }
    }

    #[test]
    fn leftovers_are_this_destinations_temporary_names_only() {
        let name = OsStr::new("out.jsonl");
        let yes = [
            ".out.jsonl.0123456789abcdef.tmp",
            ".out.jsonl.1.tmp",
            ".out.jsonl.4294967295.tmp",
        ];
        for candidate in yes {
            assert!(is_leftover(name, OsStr::new(candidate)), "{candidate}");
        }
        let no = [
            "out.jsonl",
            ".out.jsonl.tmp",
            ".out.jsonl..tmp",
            ".out.jsonl.0123456789ABCDEF.tmp",
            ".out.jsonl.0123456789abcde.tmp",
            ".out.jsonl.12345678901.tmp",
            ".out.jsonl.5.0123456789abcdef.tmp",
            ".out.jsonl.1.tmp.bak",
            ".out.jsonl2.1.tmp",
            ".other.jsonl.1.tmp",
            "..out.jsonl.1.tmp",
            ".out.jsonl.-1.tmp",
        ];
        for candidate in no {
            assert!(!is_leftover(name, OsStr::new(candidate)), "{candidate}");
        }
    }
}
