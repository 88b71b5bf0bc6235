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

/// A capture being written.
#[derive(Debug)]
pub struct Capture {
    pub path: PathBuf,
    pub written: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Capture {
    /// Creates the file and starts writing what `tap` delivers; `count` 0 means no limit.
    pub fn start(path: &Path, count: u64, tap: &Tap) -> Result<Capture, String> {
        let file = std::fs::File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let header = PcapHeader { datalink: DataLink::ETHERNET, ..Default::default() };
        let mut w = PcapWriter::with_header(file, header).map_err(|e| e.to_string())?;
        let rx = tap.receiver();
        let written = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (wr, dn, st) = (written.clone(), done.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let mut result = Ok(());
                while !st.load(Ordering::Relaxed) {
                    let Ok(c) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
                    if let Err(e) = write(&mut w, &c) {
                        result = Err(e);
                        break;
                    }
                    let n = wr.fetch_add(1, Ordering::Relaxed) + 1;
                    if count > 0 && n >= count {
                        break;
                    }
                }
                let flushed = std::io::Write::flush(&mut w.into_writer()).map_err(|e| e.to_string());
                dn.store(true, Ordering::Relaxed);
                result.and(flushed)
            })
            .map_err(|e| e.to_string())?;
        Ok(Capture { path: path.to_path_buf(), written, done, stop, thread: Some(thread) })
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
