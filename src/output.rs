//! Where replies go when `OUTPUT_FILE` is set: JSON lines written under a
//! temporary name beside the final one, and renamed into place only once
//! every row has succeeded. A failed, killed or stopped job leaves nothing
//! under the final name, so a reader never sees half an output.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::signals;

pub struct AtomicFile {
    temp: PathBuf,
    destination: PathBuf,
    writer: Option<BufWriter<File>>,
    committed: bool,
}

impl AtomicFile {
    pub fn create(destination: &Path) -> Result<AtomicFile, Error> {
        let cant_create = |cause| Error::CantCreate {
            path: destination.display().to_string(),
            cause,
        };
        let Some(name) = destination.file_name() else {
            return Err(cant_create(std::io::Error::other("the path names no file")));
        };
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = destination.with_file_name(temp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(cant_create)?;
        signals::remove_on_stop(temp.clone());
        Ok(AtomicFile {
            temp,
            destination: destination.to_owned(),
            writer: Some(BufWriter::with_capacity(64 * 1024, file)),
            committed: false,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let result = match &mut self.writer {
            Some(writer) => writer.write_all(bytes),
            None => Ok(()),
        };
        result.map_err(|cause| self.io_error(cause))
    }

    /// Flushes, syncs and renames into place.
    pub fn commit(mut self) -> Result<(), Error> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all().map(|()| file))
            .map_err(|cause| self.io_error(cause))?;
        drop(file);
        if let Err(cause) = std::fs::rename(&self.temp, &self.destination) {
            self.copy_into_place().map_err(|copy| {
                self.io_error(std::io::Error::new(
                    copy.kind(),
                    format!("rename failed ({cause}), and so did the copy ({copy})"),
                ))
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
    fn copy_into_place(&self) -> std::io::Result<()> {
        log::debug!(
            "Cannot rename into place; copying to {}",
            self.destination.display()
        );
        let copied = File::open(&self.temp).and_then(|mut source| {
            let mut destination = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.destination)?;
            stream(&mut source, &mut destination)?;
            destination.sync_all()
        });
        if let Err(error) = copied {
            let _ = std::fs::remove_file(&self.destination);
            return Err(error);
        }
        std::fs::remove_file(&self.temp)
    }

    fn io_error(&self, cause: std::io::Error) -> Error {
        Error::Io {
            what: format!("writing output file {}", self.destination.display()),
            cause,
        }
    }
}

/// Plain reads and writes in order: no `copy_file_range` or `sendfile`,
/// whose support a streaming filesystem need not have.
fn stream(source: &mut File, destination: &mut File) -> std::io::Result<()> {
    let mut buffer = vec![0; 64 * 1024];
    loop {
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
            let _ = std::fs::remove_file(&self.temp);
            signals::leave_on_stop(&self.temp);
        }
    }
}
