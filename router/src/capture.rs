//! `router capture`: the node writes what its data plane receives and sends into a pcap file
//! (Ethernet link type; with IPIP both the inner packet on the pod side and the encapsulated
//! one on the uplink appear), from the tap the workers fill while a capture runs.

use forwarding::tap::{Captured, Tap};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

/// The most a capture may write and run, whatever the request asks: a client that dies
/// without stopping its capture must not fill the disk or keep the workers copying frames.
pub const MAX_BYTES: u64 = 256 << 20;
pub const MAX_TIME: Duration = Duration::from_secs(3600);

/// When a capture stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Packets (0: no limit).
    pub packets: u64,
    /// Bytes in the file, headers included.
    pub bytes: u64,
    pub time: Duration,
}

impl Limits {
    /// What a request asks for, within the node's caps; 0 seconds, as 0 packets, is no limit
    /// of the client's.
    pub fn capped(packets: u64, seconds: Option<u64>) -> Limits {
        let time = seconds.filter(|&s| s > 0).map_or(MAX_TIME, |s| Duration::from_secs(s).min(MAX_TIME));
        Limits { packets, bytes: MAX_BYTES, time }
    }
}

/// A capture being written.
#[derive(Debug)]
pub struct Capture {
    pub path: PathBuf,
    pub written: Arc<AtomicU64>,
    /// Why the writer stopped by itself (a limit), once it has.
    pub ended: Arc<std::sync::Mutex<Option<&'static str>>>,
    done: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Capture {
    /// Creates the file, which must not exist yet (mode 0600, never through a symlink: the
    /// node may run as root and the path comes from a client), and starts writing what `tap`
    /// delivers until `limits` or [`Capture::finish`] stop it.
    pub fn start(path: &Path, limits: Limits, tap: &Tap) -> Result<Capture, String> {
        let file = nodeapi::private::create_new(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{} already exists (or is a symlink); the node only writes new files", path.display())
            }
            _ => format!("creating {}: {e}", path.display()),
        })?;
        let header = PcapHeader { datalink: DataLink::ETHERNET, ..Default::default() };
        let mut w = PcapWriter::with_header(file, header).map_err(|e| e.to_string())?;
        let rx = tap.receiver();
        let written = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(std::sync::Mutex::new(None));
        let (wr, dn, st, en) = (written.clone(), done.clone(), stop.clone(), ended.clone());
        let deadline = std::time::Instant::now() + limits.time;
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let mut result = Ok(());
                // The pcap file header.
                let mut bytes = 24u64;
                let end = |why| {
                    if let Ok(mut e) = en.lock() {
                        *e = Some(why);
                    }
                };
                while !st.load(Ordering::Relaxed) {
                    if std::time::Instant::now() >= deadline {
                        end("time limit");
                        break;
                    }
                    let Ok(c) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
                    // A record header and the frame.
                    let size = 16 + c.frame.len() as u64;
                    if bytes + size > limits.bytes {
                        end("size limit");
                        break;
                    }
                    if let Err(e) = write(&mut w, &c) {
                        result = Err(e);
                        break;
                    }
                    bytes += size;
                    let n = wr.fetch_add(1, Ordering::Relaxed) + 1;
                    if limits.packets > 0 && n >= limits.packets {
                        end("packet count");
                        break;
                    }
                }
                let flushed = std::io::Write::flush(&mut w.into_writer()).map_err(|e| e.to_string());
                dn.store(true, Ordering::Relaxed);
                result.and(flushed)
            })
            .map_err(|e| e.to_string())?;
        Ok(Capture { path: path.to_path_buf(), written, ended, done, stop, thread: Some(thread) })
    }

    pub fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops writing and closes the file; returns the writer's error, if any.
    pub fn finish(mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| "capture writer panicked".to_string())??;
        }
        Ok(self.written.load(Ordering::Relaxed))
    }
}

fn write(w: &mut PcapWriter<std::fs::File>, c: &Captured) -> Result<(), String> {
    let ts = c.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let pkt = PcapPacket::new(ts, c.frame.len() as u32, &c.frame);
    w.write_packet(&pkt).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use forwarding::tap::Direction;
    use forwarding::IfaceId;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("router-capture-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        nodeapi::private::dir(&d).expect("scratch dir");
        d
    }

    fn wait_done(c: &Capture) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !c.done() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(c.done(), "the capture did not stop by itself");
    }

    #[test]
    fn no_time_asked_for_or_0_seconds_is_the_nodes_limit() {
        assert_eq!(Limits::capped(0, None).time, MAX_TIME);
        assert_eq!(Limits::capped(0, Some(0)).time, MAX_TIME);
        assert_eq!(Limits::capped(0, Some(5)).time, Duration::from_secs(5));
        assert_eq!(Limits::capped(0, Some(u64::MAX)).time, MAX_TIME);
    }

    #[test]
    fn refuses_an_existing_file_and_a_symlink() {
        let d = scratch("exists");
        let tap = Tap::default();
        std::fs::write(d.join("a.pcap"), "mine").expect("seed");
        let e = Capture::start(&d.join("a.pcap"), Limits::capped(0, None), &tap).expect_err("existing file");
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read_to_string(d.join("a.pcap")).expect("read"), "mine");
        std::os::unix::fs::symlink(d.join("victim"), d.join("l.pcap")).expect("symlink");
        Capture::start(&d.join("l.pcap"), Limits::capped(0, None), &tap).expect_err("symlink");
        assert!(!d.join("victim").exists(), "created the symlink's target");
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    #[test]
    fn stops_at_the_size_limit_with_the_file_within_it() {
        use std::os::unix::fs::MetadataExt;
        let d = scratch("size");
        let tap = Tap::default();
        let limits = Limits { packets: 0, bytes: 24 + 10 * (16 + 1000), time: Duration::from_secs(60) };
        let c = Capture::start(&d.join("s.pcap"), limits, &tap).expect("start");
        tap.start(None, Vec::new());
        for _ in 0..50 {
            tap.copy(IfaceId(0), Direction::Rx, &[0u8; 1000], true);
        }
        wait_done(&c);
        assert_eq!(*c.ended.lock().expect("lock"), Some("size limit"));
        let n = c.finish().expect("finish");
        assert_eq!(n, 10);
        let meta = std::fs::metadata(d.join("s.pcap")).expect("stat");
        assert_eq!(meta.len(), limits.bytes);
        assert_eq!(meta.mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    #[test]
    fn stops_at_the_time_limit_and_the_request_cannot_pass_the_cap() {
        assert_eq!(Limits::capped(0, Some(10 * 3600)).time, MAX_TIME);
        assert_eq!(Limits::capped(0, Some(5)).time, Duration::from_secs(5));
        assert_eq!(Limits::capped(0, None).bytes, MAX_BYTES);
        let d = scratch("time");
        let tap = Tap::default();
        let limits = Limits { packets: 0, bytes: MAX_BYTES, time: Duration::from_millis(200) };
        let c = Capture::start(&d.join("t.pcap"), limits, &tap).expect("start");
        wait_done(&c);
        assert_eq!(*c.ended.lock().expect("lock"), Some("time limit"));
        c.finish().expect("finish");
        std::fs::remove_dir_all(&d).expect("clean up");
    }
}
