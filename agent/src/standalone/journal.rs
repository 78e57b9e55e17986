//! A pod record's power-loss copy. `<pod>.json` is the record every reader uses: replaced
//! whole (temp file and rename), so a crash of the agent leaves the old or the new one, but
//! not synced to disk. This copy is what survives a power loss: one file per pod, written
//! once and then overwritten in place, two slots taking turns. A save writes the
//! slot that does not hold the newest copy and syncs its data: once both slots have been
//! written, nothing is created, renamed, resized or allocated, so the sync is a data write and
//! a cache flush, not a filesystem journal commit for the file and another for its directory.
//!
//! A power loss mid-write tears at most the slot being written; its checksum fails and the
//! other slot, the previous save, stands. The copy is read only after a reboot (its boot id
//! is not this boot's): within a boot, `<pod>.json` is never older than it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"nesrec1\n";
/// A slot's header: magic (8 bytes), sequence (8), payload length (4), boot id (36), zeros
/// to 64, then the SHA-256 of the 64 bytes before it and of the payload.
const HEADER: usize = 96;
const BOOT_LEN: usize = 36;
const DIGEST_AT: usize = HEADER - 32;
/// A slot is at least this big, and doubles past what a record needs: a pod's record grows
/// with its spec (a 1,500-object record is about 60 KiB).
const MIN_SLOT: usize = 4 << 10;

/// The newest valid copy in a pod's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub seq: u64,
    pub boot: String,
    pub payload: Vec<u8>,
}

/// Where the next save of a pod goes.
#[derive(Debug, Clone, Copy)]
struct Slots {
    size: usize,
    next: usize,
    seq: u64,
}

/// The copies of every pod under one directory. One writer per pod at a time (the standalone
/// agent saves a pod's record under that pod's lock); pods write in parallel.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    boot: String,
    slots: Mutex<HashMap<String, Slots>>,
}

impl Journal {
    /// `dir` is created if missing; `boot` is this boot's id (`/proc/sys/kernel/random/boot_id`).
    pub fn open(dir: PathBuf, boot: String) -> Result<Self> {
        let file_err = |source| Error::File {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(file_err)?;
        // The directory's own entry must outlive a power loss too.
        if let Some(parent) = dir.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(file_err)?;
        }
        Ok(Self {
            dir,
            boot,
            slots: Mutex::default(),
        })
    }

    pub fn path(&self, pod: &str) -> PathBuf {
        self.dir.join(pod)
    }

    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// Makes `payload` the pod's newest copy, synced to disk when this returns.
    pub fn write(&self, pod: &str, payload: &[u8]) -> Result<()> {
        let path = self.path(pod);
        let file_err = |source| Error::File {
            path: path.clone(),
            source,
        };
        let known = self.lock().get(pod).copied();
        let slots = match known {
            Some(s) => Some(s),
            None => Self::scan(&path)?,
        };
        let next = match slots.filter(|s| HEADER + payload.len() <= s.size) {
            Some(s) => {
                let slot = encode(s.seq, &self.boot, payload);
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(file_err)?;
                file.write_all_at(&slot, (s.next * s.size) as u64)
                    .map_err(file_err)?;
                file.sync_data().map_err(file_err)?;
                Slots {
                    size: s.size,
                    next: 1 - s.next,
                    seq: s.seq + 1,
                }
            }
            // No copy yet, or a record outgrew its slots: a file holding this copy in slot 0.
            // The rest is a hole, not zeros: the next save fills its slot's blocks (a sync of
            // data and their allocation).
            _ => {
                let seq = slots.map_or(1, |s| s.seq);
                let size = (HEADER + payload.len()).next_power_of_two().max(MIN_SLOT);
                let slot = encode(seq, &self.boot, payload);
                let fill = |file: &mut File| {
                    file.write_all(&slot)?;
                    file.set_len(2 * size as u64)?;
                    file.sync_all()
                };
                match slots {
                    // A pod's first copy, written where it stays: one filesystem commit, not
                    // two. A crash mid-way leaves a file with no valid slot, which is read as
                    // no copy; there was none before it to lose. In the empty file
                    // [`Journal::prepare`] made, its directory entry is on disk already.
                    None | Some(Slots { size: 0, .. }) => {
                        let mut file = std::fs::OpenOptions::new()
                            .write(true)
                            .create(true)
                            .truncate(false)
                            .mode(0o600)
                            .open(&path)
                            .map_err(file_err)?;
                        fill(&mut file).map_err(file_err)?;
                    }
                    // Outgrown: the old file keeps the copies that stand until the new one
                    // replaces it whole.
                    Some(_) => {
                        let mut tmp =
                            tempfile::NamedTempFile::new_in(&self.dir).map_err(file_err)?;
                        fill(tmp.as_file_mut()).map_err(file_err)?;
                        tmp.persist(&path).map_err(|e| file_err(e.error))?;
                    }
                }
                let prepared = known.is_some_and(|s| s.size == 0);
                if !prepared {
                    File::open(&self.dir)
                        .and_then(|d| d.sync_all())
                        .map_err(file_err)?;
                }
                Slots {
                    size,
                    next: 1,
                    seq: seq + 1,
                }
            }
        };
        self.lock().insert(pod.to_string(), next);
        Ok(())
    }

    /// Creates the pod's file, empty, with its directory entry synced, ahead of its first
    /// save: that save is then a write into the file and a sync of it, with no commit of the
    /// directory on the request path. A file already there is left as it is.
    pub fn prepare(&self, pod: &str) -> Result<()> {
        let path = self.path(pod);
        let file_err = |source| Error::File {
            path: path.clone(),
            source,
        };
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match created {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(file_err(e)),
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(file_err)?;
        // Known from now on as empty and on disk; a save that came first stays known as it is.
        self.lock().entry(pod.to_string()).or_insert(Slots {
            size: 0,
            next: 0,
            seq: 1,
        });
        Ok(())
    }

    /// The pod's newest valid copy; `None` without a file or a valid slot.
    pub fn read(&self, pod: &str) -> Result<Option<Synced>> {
        Ok(read_slots(&self.path(pod))?.and_then(|f| f.newest.map(|(_, c)| c)))
    }

    /// Where the next write of an existing file goes, read from the file.
    fn scan(path: &Path) -> Result<Option<Slots>> {
        Ok(read_slots(path)?.map(|found| {
            let size = found.size;
            match found.newest {
                Some((at, copy)) => Slots {
                    size,
                    next: 1 - at,
                    seq: copy.seq + 1,
                },
                None => Slots {
                    size,
                    next: 0,
                    seq: 1,
                },
            }
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slots>> {
        common::sync::lock(&self.slots)
    }
}

fn encode(seq: u64, boot: &str, payload: &[u8]) -> Vec<u8> {
    let mut slot = vec![0u8; HEADER + payload.len()];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&seq.to_le_bytes());
    slot[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let boot = boot.as_bytes();
    let n = boot.len().min(BOOT_LEN);
    slot[20..20 + n].copy_from_slice(&boot[..n]);
    slot[HEADER..].copy_from_slice(payload);
    let digest = digest(&slot[..DIGEST_AT], payload);
    slot[DIGEST_AT..HEADER].copy_from_slice(&digest);
    slot
}

fn digest(header: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(header);
    ctx.update(payload);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A slot's copy, if it is whole.
fn decode(slot: &[u8]) -> Option<Synced> {
    if slot.len() < HEADER || &slot[..8] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(slot[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(slot[16..20].try_into().ok()?) as usize;
    let payload = slot.get(HEADER..HEADER.checked_add(len)?)?;
    if digest(&slot[..DIGEST_AT], payload)[..] != slot[DIGEST_AT..HEADER] {
        return None;
    }
    let boot = &slot[20..20 + BOOT_LEN];
    let boot = String::from_utf8_lossy(boot)
        .trim_end_matches('\0')
        .to_string();
    Some(Synced {
        seq,
        boot,
        payload: payload.to_vec(),
    })
}

/// What a pod's file holds.
struct Found {
    size: usize,
    /// The newest valid copy, and its slot.
    newest: Option<(usize, Synced)>,
}

/// `None` without a file.
fn read_slots(path: &Path) -> Result<Option<Found>> {
    let mut bytes = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::File {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let size = bytes.len() / 2;
    let newest = (0..2)
        .filter_map(|at| decode(&bytes[at * size..(at + 1) * size]).map(|c| (at, c)))
        .max_by_key(|(_, c)| c.seq);
    Ok(Some(Found { size, newest }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn journal(dir: &Path) -> Journal {
        Journal::open(dir.join("journal"), "boot-a".into()).expect("open")
    }

    #[test]
    fn saves_overwrite_the_older_slot_in_place_and_the_newest_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = journal(dir.path());
        assert_eq!(j.read("p").expect("read"), None);
        j.write("p", b"one").expect("write");
        let created = std::fs::metadata(j.path("p")).expect("stat");
        for payload in [&b"two"[..], b"three", b"four"] {
            j.write("p", payload).expect("write");
            let newest = j.read("p").expect("read").expect("a copy");
            assert_eq!(newest.payload, payload);
            assert_eq!(newest.boot, "boot-a");
        }
        // The hot path creates, renames and resizes nothing: only data is synced.
        let now = std::fs::metadata(j.path("p")).expect("stat");
        assert_eq!((now.ino(), now.len()), (created.ino(), created.len()));
        // Another journal over the same files (an agent restart) goes on from the file.
        let again = journal(dir.path());
        again.write("p", b"five").expect("write");
        assert_eq!(
            again.read("p").expect("read").expect("copy").payload,
            b"five"
        );
        assert_eq!(j.read("p").expect("read").expect("copy").seq, 5);
    }

    #[test]
    fn a_torn_slot_leaves_the_previous_save_standing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = journal(dir.path());
        j.write("p", b"acknowledged").expect("write");
        j.write("p", b"being written").expect("write");
        // A power loss mid-write: part of the newest slot's payload never reached the disk.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(j.path("p"))
            .expect("open");
        let size = std::fs::metadata(j.path("p")).expect("stat").len() / 2;
        file.write_all_at(b"XXXX", size + HEADER as u64 + 2)
            .expect("tear");
        let read = j.read("p").expect("read").expect("a copy");
        assert_eq!(read.payload, b"acknowledged");
        // The next save takes the torn slot, not the one that stands.
        let fresh = journal(dir.path());
        fresh.write("p", b"next").expect("write");
        assert_eq!(
            fresh.read("p").expect("read").expect("copy").payload,
            b"next"
        );
        file.write_all_at(b"XXXX", size + HEADER as u64)
            .expect("tear");
        assert_eq!(
            fresh.read("p").expect("read").expect("copy").payload,
            b"acknowledged"
        );
        // A creation cut short leaves no valid slot: read as no copy, and the next agent's
        // first save replaces it.
        std::fs::write(j.path("p"), b"not a journal").expect("garbage");
        assert_eq!(j.read("p").expect("read"), None);
        let restarted = journal(dir.path());
        restarted.write("p", b"again").expect("write");
        assert_eq!(
            restarted.read("p").expect("read").expect("copy").payload,
            b"again"
        );
    }

    #[test]
    fn a_prepared_file_takes_the_first_save_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = journal(dir.path());
        j.prepare("p").expect("prepare");
        let prepared = std::fs::metadata(j.path("p")).expect("stat");
        assert_eq!(prepared.len(), 0);
        assert_eq!(j.read("p").expect("read"), None, "an empty file is no copy");
        j.write("p", b"first").expect("write");
        let saved = std::fs::metadata(j.path("p")).expect("stat");
        assert_eq!(
            saved.ino(),
            prepared.ino(),
            "written in place, not replaced"
        );
        assert_eq!(j.read("p").expect("read").expect("copy").payload, b"first");
        // Preparing again leaves a copy as it is; so does a save that came first.
        j.prepare("p").expect("prepare");
        j.write("q", b"saved first").expect("write");
        j.prepare("q").expect("prepare");
        for (pod, payload) in [("p", &b"first"[..]), ("q", b"saved first")] {
            assert_eq!(j.read(pod).expect("read").expect("copy").payload, payload);
        }
        j.write("q", b"second").expect("write");
        assert_eq!(j.read("q").expect("read").expect("copy").seq, 2);
        // An empty file an earlier agent prepared: the next agent's first save fills it.
        let earlier = journal(dir.path());
        earlier.prepare("r").expect("prepare");
        let next = journal(dir.path());
        next.write("r", b"after a restart").expect("write");
        assert_eq!(
            next.read("r").expect("read").expect("copy").payload,
            b"after a restart"
        );
    }

    #[test]
    fn a_record_that_outgrows_its_slot_moves_to_a_bigger_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = journal(dir.path());
        j.write("p", b"small").expect("write");
        let big = vec![b'x'; 3 * MIN_SLOT];
        j.write("p", &big).expect("write");
        assert_eq!(j.read("p").expect("read").expect("copy").payload, big);
        assert!(std::fs::metadata(j.path("p")).expect("stat").len() >= 2 * big.len() as u64);
        j.write("p", b"small again").expect("write");
        assert_eq!(
            j.read("p").expect("read").expect("copy").payload,
            b"small again"
        );
    }
}
