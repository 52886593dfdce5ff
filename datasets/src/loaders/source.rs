//! Where the bytes of a text unit live, and the line numbers dead letters are reported at.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where the bytes of a text unit live.
#[derive(Clone, Debug)]
pub enum TextSource {
    /// A file on disk.
    File(Arc<TextFile>),
    /// A dataset compiled into the binary.
    Embedded {
        /// The name it is reported under (`datasets/nab/…csv`).
        name: &'static str,
        /// The whole file.
        bytes: &'static [u8],
    },
}

/// A text file being read, with the line numbers found so far at unit starts.
#[derive(Debug)]
pub struct TextFile {
    path: PathBuf,
    /// Byte offset of a line start → its 1-based line number. Filled only when a dead letter
    /// needs a line number, so that planning never has to read a whole file.
    lines: Mutex<BTreeMap<u64, u64>>,
}

impl TextFile {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            lines: Mutex::new(BTreeMap::from([(0, 1)])),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based number of the line that starts at byte `offset`, counted from the nearest
    /// offset already known.
    fn line_at(&self, offset: u64) -> std::io::Result<u64> {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let (&known, &line) = lines.range(..=offset).next_back().unwrap_or((&0, &1));
        if known == offset {
            return Ok(line);
        }
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(known))?;
        let mut block = vec![0u8; 1 << 20];
        let (mut at, mut line) = (known, line);
        while at < offset {
            let want = ((offset - at) as usize).min(block.len());
            let n = file.read(&mut block[..want])?;
            if n == 0 {
                break;
            }
            line += memchr::memchr_iter(b'\n', &block[..n]).count() as u64;
            at += n as u64;
        }
        lines.insert(offset, line);
        Ok(line)
    }
}

impl TextSource {
    /// `path:line`, for dead letters.
    pub fn origin(&self, line: u64) -> String {
        format!("{}:{line}", self.path().display())
    }

    /// `path:line` of the line `line_in_unit` lines (0-based) after the line that starts at
    /// byte `unit_start`. The line number is worked out only here, when a dead letter needs it.
    pub fn origin_at(&self, unit_start: u64, line_in_unit: u64) -> String {
        match self.line_at(unit_start) {
            Ok(line) => self.origin(line + line_in_unit),
            // The file could not be read again: a byte offset still finds the line.
            Err(_) => format!(
                "{}: line {} after byte {unit_start}",
                self.path().display(),
                line_in_unit + 1
            ),
        }
    }

    /// The 1-based number of the line that starts at byte `offset`.
    pub fn line_at(&self, offset: u64) -> std::io::Result<u64> {
        match self {
            TextSource::File(file) => file.line_at(offset),
            TextSource::Embedded { bytes, .. } => {
                let end = (offset as usize).min(bytes.len());
                Ok(1 + memchr::memchr_iter(b'\n', &bytes[..end]).count() as u64)
            }
        }
    }

    /// The path the series names of a NAB-shaped CSV are taken from.
    pub fn path(&self) -> &Path {
        match self {
            TextSource::File(file) => file.path(),
            TextSource::Embedded { name, .. } => Path::new(name),
        }
    }
}
