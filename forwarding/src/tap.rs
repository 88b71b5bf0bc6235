//! The capture tap: while a capture runs, workers copy what they receive and send to a
//! bounded channel; a writer elsewhere turns it into pcap. When no capture runs the cost is
//! one relaxed load per batch.

use crate::iface::IfaceId;
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Rx,
    Tx,
}

/// One copied frame. Bare IP packets (tun mode) get a zero Ethernet header so that a capture
/// has one link type.
#[derive(Debug, Clone)]
pub struct Captured {
    pub time: SystemTime,
    pub iface: IfaceId,
    pub direction: Direction,
    pub frame: Vec<u8>,
}

#[derive(Debug)]
pub struct Tap {
    active: AtomicBool,
    /// `u32::MAX`: every interface.
    iface: AtomicU32,
    /// Only frames to or from these addresses ([`crate::trace::involves`]; none: every
    /// frame), judged before the copy, so that what is left out costs no allocation and no
    /// room in the channel.
    hosts: ArcSwap<Vec<IpAddr>>,
    tx: Sender<Captured>,
    rx: Receiver<Captured>,
    /// Frames lost because the writer fell behind.
    pub lost: AtomicU64,
}

impl Default for Tap {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(8192);
        Tap {
            active: AtomicBool::new(false),
            iface: AtomicU32::new(u32::MAX),
            hosts: ArcSwap::from_pointee(Vec::new()),
            tx,
            rx,
            lost: AtomicU64::new(0),
        }
    }
}

impl Tap {
    /// Starts copying frames of `iface` (all interfaces when `None`), only those to or from
    /// one of `hosts` if any is given (a dual-stack pod is two).
    pub fn start(&self, iface: Option<IfaceId>, hosts: Vec<IpAddr>) {
        while self.rx.try_recv().is_ok() {}
        self.iface.store(iface.map_or(u32::MAX, |i| u32::from(i.0)), Relaxed);
        self.hosts.store(std::sync::Arc::new(hosts));
        self.active.store(true, Relaxed);
    }

    pub fn stop(&self) {
        self.active.store(false, Relaxed);
    }

    #[inline]
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    pub fn receiver(&self) -> Receiver<Captured> {
        self.rx.clone()
    }

    /// Copies a frame if it matches the filter (call only when `active()`).
    pub fn copy(&self, iface: IfaceId, direction: Direction, data: &[u8], ethernet: bool) {
        let f = self.iface.load(Relaxed);
        if f != u32::MAX && f != u32::from(iface.0) {
            return;
        }
        let hosts = self.hosts.load();
        if !hosts.is_empty() && !crate::trace::involves(data, ethernet, &hosts) {
            return;
        }
        let frame = if ethernet {
            data.to_vec()
        } else {
            // Bare IP (tun): the zero Ethernet header names the IP version it carries.
            let ethertype: [u8; 2] =
                if data.first().is_some_and(|b| b >> 4 == 6) { [0x86, 0xdd] } else { [0x08, 0x00] };
            let mut v = vec![0u8; 14];
            v[12..14].copy_from_slice(&ethertype);
            v.extend_from_slice(data);
            v
        };
        let c = Captured { time: SystemTime::now(), iface, direction, frame };
        if self.tx.try_send(c).is_err() {
            crate::counters::bump(&self.lost, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_filter_leaves_other_frames_uncopied() {
        let tap = Tap::default();
        let rx = tap.receiver();
        tap.start(None, vec![[10, 244, 3, 1].into()]);
        let mut to_pod = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 244, 1, 1], [10, 244, 3, 1], 64)
            .udp(1, 2)
            .write(&mut to_pod, b"x")
            .expect("build");
        let mut elsewhere = to_pod.clone();
        elsewhere[19] = 9; // the destination's last byte: 10.244.3.9
        tap.copy(IfaceId(0), Direction::Rx, &elsewhere, false);
        tap.copy(IfaceId(0), Direction::Rx, &to_pod, false);
        let got: Vec<Captured> = rx.try_iter().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].frame[14..], &to_pod[..]);
        // A new capture without the filter takes everything again.
        tap.start(None, Vec::new());
        tap.copy(IfaceId(0), Direction::Rx, &elsewhere, false);
        assert_eq!(rx.try_iter().count(), 1);
    }

    #[test]
    fn bare_packets_get_the_ethertype_of_their_ip_version() {
        let tap = Tap::default();
        let rx = tap.receiver();
        tap.start(None, Vec::new());
        for (b, ethertype) in [
            (etherparse::PacketBuilder::ipv4([10, 244, 1, 1], [10, 244, 3, 1], 64), [0x08, 0x00]),
            (etherparse::PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64), [0x86, 0xdd]),
        ] {
            let mut p = Vec::new();
            b.udp(1, 2).write(&mut p, b"x").expect("build");
            tap.copy(IfaceId(0), Direction::Tx, &p, false);
            let got = rx.try_recv().expect("copied");
            assert_eq!((&got.frame[12..14], &got.frame[14..]), (&ethertype[..], &p[..]));
        }
    }
}
