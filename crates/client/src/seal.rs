//! The seal: what a partial download looked like when the run that wrote it stopped cleanly,
//! or after the last chunk it journaled.
//!
//! A resume reads every journaled chunk back and checks it, because the partial file may have
//! changed since it was written: a crash or power cut before the bytes reached the disk,
//! another program writing to it, a copy. For a 4 GiB file that is 3.6 GB read again, and on
//! a disk slower than the network it costs more than fetching the rest.
//!
//! When a download stops cleanly (Ctrl-C, the connection lost for good, a server error), the
//! client syncs the partial file and its journal and appends a seal to the journal: this
//! boot's id, the file's device, inode, size and change time. The next run skips the read-back
//! when all of them are still the same: the file is the one this client wrote, nothing wrote
//! to it, truncated it or changed it since (every such change sets the change time, which no
//! program can set back), and the machine was not restarted (so no write was lost in a power
//! cut). Anything else, or no seal, and every chunk is read back as before. `touch` on the
//! partial file forces that.
//!
//! A run that is killed (`kill -9`, the out-of-memory killer) has no clean stop, so while a
//! download runs the journal also gets a running seal with every chunk, in the same write as
//! the chunk's line ([`Watch`]): taken once the write that completed the chunk is in the
//! file, where change times always move on a change made right after they were looked at
//! (Linux 6.13 and later on ext4, XFS, Btrfs and tmpfs), for SHA-256 and MD5 downloads (whose
//! resume continues the saved hash state, so a seal spares it the read-back), and only while
//! every journaled byte is trusted (written by this run, or checked or found sealed before).
//! Killed between two writes, the run leaves a seal that still holds; killed while it wrote
//! the next bytes, the file changed after the seal and is read back. A running seal is not
//! synced: a crash of the machine changes the boot id anyway.
//!
//! Seals are made and trusted only on file systems that keep a change time no program can set
//! (ext2/3/4, XFS, Btrfs, F2FS, ZFS, tmpfs, and overlayfs over them): FAT and exFAT, for one,
//! have none, and network file systems may cache it. Elsewhere every resume reads back.
//!
//! The seal of a clean stop is taken only once the clock that stamps change times has moved
//! past the file's (at most a clock tick, a few milliseconds), so any later change gets a
//! later change time; on file systems whose change times are whole seconds (ext2, ext3, ext4
//! with small inodes) no seal is taken at all. A failed flush at a stop voids any running
//! seal (the kernel may have dropped pages it could not write).
//!
//! What the seal does not cover, as a download that is never interrupted does not either
//! between its writes and its rename: another program writing to the partial file while this
//! client runs (what it wrote before the seal is sealed in; on tmpfs, which never
//! write-protects pages again, a program that already had the file mapped for writing can go
//! on changing it without a new change time); the storage returning other bytes than were
//! written without an error (or, after a `kill -9`, failing to write pages back with no
//! process left to be told); and someone with raw access to the device editing it offline.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

/// The identity and state of a partial file at a clean stop or after a journaled chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// The boot the file was written in (`/proc/sys/kernel/random/boot_id`).
    pub boot: String,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Change time: seconds and nanoseconds.
    pub ctime: (i64, i64),
}

impl Seal {
    /// The seal `file` has now; `None` where the boot cannot be told apart (not Linux) or
    /// the file cannot be examined.
    pub fn of(file: &File) -> Option<Seal> {
        if !keeps_change_times(file) {
            return None;
        }
        let boot = boot_id()?;
        Seal::now(boot, file)
    }

    /// `file` as it is now, written in boot `boot`.
    fn now(boot: String, file: &File) -> Option<Seal> {
        let m = file.metadata().ok()?;
        Some(Seal {
            boot,
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// The seal to record for `file` after its last write: `None` where a later change could
    /// keep the same change time (whole-second change times, or a clock that does not move
    /// past the file's within 20 ms).
    pub fn settled(file: &File) -> Option<Seal> {
        let seal = Seal::of(file)?;
        let wait = || std::thread::sleep(std::time::Duration::from_millis(1));
        clock_passes(seal.ctime, stamp_clock, wait).then_some(seal)
    }

    /// Whether `file` is still exactly as sealed.
    pub fn matches(&self, file: &File) -> bool {
        Seal::of(file).as_ref() == Some(self)
    }

    /// The journal line's fields after `sealed `.
    pub fn to_fields(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.boot, self.dev, self.ino, self.size, self.ctime.0, self.ctime.1
        )
    }

    /// Parses [`Seal::to_fields`]; `None` for anything else (a torn line).
    pub fn from_fields(text: &str) -> Option<Seal> {
        let f: Vec<&str> = text.split(' ').collect();
        let [boot, dev, ino, size, secs, nanos] = f[..] else {
            return None;
        };
        if !valid_boot(boot) {
            return None;
        }
        Some(Seal {
            boot: boot.to_owned(),
            dev: dev.parse().ok()?,
            ino: ino.parse().ok()?,
            size: size.parse().ok()?,
            ctime: (secs.parse().ok()?, nanos.parse().ok()?),
        })
    }
}

/// Seals taken while a download runs, one with each journaled chunk, so that a run that is
/// killed (`kill -9`, the out-of-memory killer) leaves one too.
///
/// Such a seal is taken without waiting for the clock (the next bytes are already on their
/// way): it can be trusted only where a change made right after the change time was looked at
/// always gets another change time. Linux 6.13 and later do that on ext4, XFS, Btrfs and tmpfs
/// ("multigrain" timestamps); [`Watch::of`] checks it on the file itself. A seal taken after
/// the write that completed chunk `k` holds only while nothing at all has changed the file
/// since, this client's own next write included: killed between the two, the next run finds
/// the file sealed; killed after the next write began, it reads the file back.
pub struct Watch {
    boot: String,
}

impl Watch {
    /// A watch for `file`, or `None` where running seals could not be trusted: a file system
    /// not listed above, no boot id, or change times that do not always move on a change right
    /// after a look.
    pub fn of(file: &File) -> Option<Watch> {
        if !keeps_change_times(file) {
            return None;
        }
        let boot = boot_id()?;
        every_change_shows(file).then_some(Watch { boot })
    }

    /// The seal `file` (the one [`Watch::of`] was given) has now.
    pub fn seal(&self, file: &File) -> Option<Seal> {
        Seal::now(self.boot.clone(), file)
    }
}

/// Whether each change made right after a look at the change time gets a later change time
/// (not the same one, as coarse timestamps give within a clock tick). Tried on `file` itself:
/// three changes, each a `chmod` to the mode it already has (which changes only the change
/// time; the partial is this client's own file, so no set-group-ID bit is lost), each looked
/// at. The three looks must be strictly later each time and all within a millisecond: coarse
/// stamps can only move by whole ticks (1 ms or more), so two moves within a millisecond are
/// fine-grained ones. Up to three tries (a thread preempted between two changes can take
/// longer than that).
fn every_change_shows(file: &File) -> bool {
    (0..3).any(|_| three_changes_show(file))
}

/// One try of [`every_change_shows`].
fn three_changes_show(file: &File) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = file.metadata() else {
        return false;
    };
    let mode = std::fs::Permissions::from_mode(m.permissions().mode() & 0o7777);
    let mut looks = Vec::with_capacity(3);
    for _ in 0..3 {
        if file.set_permissions(mode.clone()).is_err() {
            return false;
        }
        match file.metadata() {
            Ok(m) => looks.push(m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128),
            Err(_) => return false,
        }
    }
    let within_a_tick = looks[2] - looks[0] < 1_000_000;
    // Whole-second change times never qualify (a change in the same second would not show).
    let fine = looks.iter().all(|t| t % 1_000_000_000 != 0);
    fine && within_a_tick && looks.windows(2).all(|w| w[0] < w[1])
}

/// Whether `clock` moves past `ctime` within 20 looks, `wait` between them; never for a
/// change time of whole seconds (a change in the same second would not show).
fn clock_passes(
    ctime: (i64, i64),
    mut clock: impl FnMut() -> (i64, i64),
    mut wait: impl FnMut(),
) -> bool {
    if ctime.1 == 0 {
        return false;
    }
    // Bounded: 20 looks.
    for _ in 0..20 {
        if clock() > ctime {
            return true;
        }
        wait();
    }
    false
}

/// The clock the kernel stamps change times from (the coarse real-time clock; a fine-grained
/// change time is never behind it).
fn stamp_clock() -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    #[cfg(target_os = "linux")]
    let clock = libc::CLOCK_REALTIME_COARSE;
    #[cfg(not(target_os = "linux"))]
    let clock = libc::CLOCK_REALTIME;
    // SAFETY: clock_gettime fills `ts`; on failure it stays at zero, which is never past a
    // change time, so no seal is taken.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    // Narrower than i64 on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    (ts.tv_sec as i64, ts.tv_nsec as i64)
}

/// This boot's id: a UUID the kernel draws at every start.
fn boot_id() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    valid_boot(id).then(|| id.to_owned())
}

/// Whether `file`'s file system keeps a change time that only the kernel sets.
fn keeps_change_times(file: &File) -> bool {
    const TRUSTED: [u32; 8] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // XFS
        0x9123_683E, // Btrfs
        0xF2F5_2010, // F2FS
        0x2FC1_2FC1, // ZFS
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs (its change times are the upper file system's)
        0xCA45_1A4E, // bcachefs
    ];
    fs_magic(file).is_some_and(|kind| TRUSTED.contains(&kind))
}

/// The magic number of `file`'s file system (Linux only).
fn fs_magic(file: &File) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: fstatfs fills `st` for an open descriptor; read only when it succeeded.
        if unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: initialised by the successful call above.
        let raw = unsafe { st.assume_init() }.f_type;
        // `f_type` is an i64 here and an i32 on 32-bit targets (where Btrfs's is negative):
        // its low 32 bits are the magic number either way.
        #[allow(clippy::unnecessary_cast)]
        Some(raw as i64 as u64 as u32)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

fn valid_boot(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Whether [`Watch::of`] must find multigrain change times for `file`: Linux 6.13 or later,
/// and ext4 or tmpfs (where the tests' temporary files are, here and in CI), XFS or Btrfs.
#[cfg(test)]
pub(crate) fn multigrain_expected(file: &File) -> bool {
    let multigrain = [0xEF53, 0x0102_1994, 0x5846_5342, 0x9123_683E];
    if !fs_magic(file).is_some_and(|kind| multigrain.contains(&kind)) {
        return false;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= (6, 13)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_watch_seals_the_file_as_it_is_and_any_later_change_shows_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"0123").unwrap();
        let mode = || file.metadata().unwrap().permissions();
        let before = mode();
        let Some(watch) = Watch::of(&file) else {
            assert!(!multigrain_expected(&file), "no watch on a 6.13+ kernel");
            return;
        };
        // The look leaves the mode as it was.
        assert_eq!(mode(), before);
        // No waiting between a seal and the next change: each shows at once.
        for round in 0..50 {
            let seal = watch.seal(&file).unwrap();
            assert_eq!(seal, Seal::of(&file).unwrap());
            assert!(seal.matches(&file));
            // In place: the size stays, only the change time tells.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(b"x"))
                .unwrap();
            assert!(!seal.matches(&file), "round {round}: a write went unseen");
        }
    }

    #[test]
    fn a_file_matches_its_seal_until_it_is_written_truncated_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"0123456789").unwrap();
        // The test's temporary directory is on one of the file systems above (ext4 or tmpfs
        // here and in CI).
        let seal = Seal::of(&file).expect("a sealable file system and a boot id");
        assert_eq!(seal.size, 10);
        assert!(seal.matches(&file));
        // Opened again: the same file.
        assert!(seal.matches(&File::open(&path).unwrap()));
        // Any write changes the change time (bounded: at most 2 s of 1 ms steps for the
        // clock to move on file systems with coarse timestamps).
        let changed = (0..2_000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(b"x"))
                .unwrap();
            !seal.matches(&file)
        });
        assert!(changed, "a write left the seal matching");
        let seal = Seal::of(&file).unwrap();
        file.set_len(5).unwrap();
        assert!(!seal.matches(&file), "truncated");
        // Replaced by a copy: another inode.
        let seal = Seal::of(&file).unwrap();
        std::fs::copy(&path, dir.path().join("q")).unwrap();
        std::fs::rename(dir.path().join("q"), &path).unwrap();
        assert!(!seal.matches(&File::open(&path).unwrap()));
    }

    #[test]
    fn a_settled_seal_waits_for_the_clock_to_pass_the_change_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("p")).unwrap();
        file.write_all(b"abc").unwrap();
        let seal = Seal::settled(&file).expect("fine-grained change times here");
        assert!(stamp_clock() > seal.ctime);
        assert!(seal.matches(&file));
    }

    #[test]
    fn no_seal_for_whole_seconds_or_a_clock_that_does_not_move_past() {
        let ticking = |start: (i64, i64)| {
            let mut now = start;
            move || {
                now.1 += 4_000_000;
                now
            }
        };
        // Fine-grained, and the clock passes it after a few ticks: sealed.
        assert!(clock_passes((10, 5), ticking((10, 0)), || {}));
        // Whole seconds: never, however far the clock has gone.
        assert!(!clock_passes((10, 0), ticking((99, 0)), || {}));
        // A change time the clock does not pass within 20 looks (a clock set back): never.
        let mut waits = 0;
        assert!(!clock_passes((10, 900_000_000), ticking((10, 0)), || {
            waits += 1
        }));
        assert_eq!(waits, 20);
    }

    #[test]
    fn nothing_is_sealed_where_change_times_are_not_kept() {
        // procfs keeps no change times a seal could trust.
        let file = File::open("/proc/self/status").unwrap();
        assert!(!keeps_change_times(&file));
        assert_eq!(Seal::of(&file), None);
        assert!(keeps_change_times(
            &File::open(std::env::temp_dir()).unwrap()
        ));
    }

    #[test]
    fn fields_round_trip_and_torn_ones_are_refused() {
        let seal = Seal {
            boot: "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6".into(),
            dev: 66306,
            ino: 1234,
            size: 3_865_470_566,
            ctime: (1_765_000_000, 123_456_789),
        };
        let text = seal.to_fields();
        assert_eq!(Seal::from_fields(&text), Some(seal));
        for cut in [text.len() - 1, text.len() - 10, 36, 10] {
            let torn = &text[..cut];
            // A cut inside the last number still parses as a number: the value differs.
            if let Some(s) = Seal::from_fields(torn) {
                assert_ne!(s.ctime.1, 123_456_789, "{torn}");
            }
        }
        assert_eq!(Seal::from_fields("not a seal"), None);
        assert_eq!(Seal::from_fields(&text.replace("0d1e", "zzzz")), None);
    }
}
