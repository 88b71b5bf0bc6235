//! The one room where the router talks to the kernel with raw syscalls: AF_PACKET, TUN and
//! raw IP sockets, batch I/O, interface ioctls and the socket options BGP needs (TCP MD5,
//! GTSM). It is the workspace's only `unsafe` code; every other crate forbids it. Every
//! `unsafe` block says why it is sound; descriptors are `OwnedFd`, borrowed as `BorrowedFd`.

use encap::gso::{VnetHdr, VNET_HDR_LEN};
use encap::MacAddr;
use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What the kernel knows about an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub mac: MacAddr,
    pub mtu: u16,
    /// The link type (`ARPHRD_*`: 1 Ethernet, 772 loopback, 65534 none, as TUN and
    /// WireGuard devices have).
    pub hw_type: u16,
}

impl LinkInfo {
    /// Whether the link carries Ethernet frames (veth, bridge, a NIC).
    pub fn is_ethernet(&self) -> bool {
        self.hw_type == libc::ARPHRD_ETHER
    }

    /// What the link is, in words, for a message about a link that is not Ethernet.
    pub fn kind(&self) -> String {
        match self.hw_type {
            libc::ARPHRD_ETHER => "Ethernet".into(),
            libc::ARPHRD_LOOPBACK => "loopback".into(),
            libc::ARPHRD_NONE => "a layer-3 device (TUN, WireGuard)".into(),
            libc::ARPHRD_TUNNEL => "an IPIP tunnel".into(),
            libc::ARPHRD_TUNNEL6 => "an IPv6 tunnel".into(),
            libc::ARPHRD_IPGRE => "a GRE tunnel".into(),
            libc::ARPHRD_SIT => "a SIT tunnel".into(),
            t => format!("link type {t}"),
        }
    }
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl_sock() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the nice value of the calling thread (on Linux a thread has its own).
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Index, MAC and MTU of the interface `name` in the current network namespace.
pub fn link_info(name: &str) -> io::Result<LinkInfo> {
    let cname = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: cname is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {name} in this network namespace"),
        ));
    }
    let sock = ioctl_sock()?;
    let mut req = ifreq_for(name)?;
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of a valid ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote the hwaddr member of the union.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *m = *b as u8;
    }
    let mut req = ifreq_for(name)?;
    // SAFETY: SIOCGIFMTU fills ifr_mtu of a valid ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote the mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(LinkInfo { ifindex, mac: MacAddr(mac), mtu: u16::try_from(mtu).unwrap_or(u16::MAX), hw_type: hw.sa_family })
}

/// Turns transmit checksum offload of `name` on or off (`ethtool -K NAME tx on|off`).
/// Off also turns off TSO, which depends on it: the interface then hands out only complete
/// frames with full checksums.
pub fn set_tx_checksum(name: &str, on: bool) -> io::Result<()> {
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut val = EthtoolValue { cmd: ETHTOOL_STXCSUM, data: u32::from(on) };
    let sock = ioctl_sock()?;
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_data = (&mut val as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads and writes the ethtool_value that ifr_data points to, which
    // lives until the call returns.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("turning tx checksum offload of {name} off: {e}")));
    }
    Ok(())
}

/// Sets (or, with an empty key, removes) the TCP MD5 signature key (RFC 2385) for `peer` on
/// a TCP socket: before `connect` on an outgoing one, on the listener for incoming ones.
pub fn set_tcp_md5(fd: BorrowedFd<'_>, peer: std::net::IpAddr, key: &[u8]) -> io::Result<()> {
    #[repr(C)]
    struct TcpMd5Sig {
        addr: libc::sockaddr_storage,
        flags: u8,
        prefixlen: u8,
        keylen: u16,
        ifindex: libc::c_int,
        key: [u8; 80],
    }
    if key.len() > 80 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "TCP MD5 keys are at most 80 bytes"));
    }
    // SAFETY: all-zero is a valid TcpMd5Sig (plain data).
    let mut sig: TcpMd5Sig = unsafe { zeroed() };
    match peer {
        std::net::IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for a sockaddr_in.
            let sin = unsafe { &mut *(&mut sig.addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        }
        std::net::IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for a sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut sig.addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("setting the TCP MD5 key for {peer}: {e} (does the kernel have CONFIG_TCP_MD5SIG?)"),
        )
    })
}

/// GTSM (RFC 5082) on a TCP socket: segments from the peer with a TTL (IPv6: hop limit)
/// below `min_ttl` are dropped by the kernel (`IP_MINTTL`, `IPV6_MINHOPCOUNT`).
pub fn set_min_ttl(fd: BorrowedFd<'_>, min_ttl: u8, ipv6: bool) -> io::Result<()> {
    let v: libc::c_int = min_ttl.into();
    let (level, opt, name) = match ipv6 {
        false => (libc::IPPROTO_IP, libc::IP_MINTTL, "IP_MINTTL"),
        true => (libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, "IPV6_MINHOPCOUNT"),
    };
    setsockopt(fd, level, opt, &v).map_err(|e| io::Error::new(e.kind(), format!("setting {name} to {min_ttl}: {e}")))
}

/// Gives the allocator's free memory back to the kernel (`malloc_trim`): after a full table's
/// FIB rebuild, the transient tables it freed would otherwise stay in the process's RSS.
pub fn trim_heap() {
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own free lists; it is
    // thread-safe (each arena is locked while it is trimmed).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Most messages per `sendmmsg`/`recvmmsg` call: the headers live on the stack, so a batch
/// costs no allocation.
pub const MAX_MSGS: usize = 64;

/// Sends each buffer as one datagram on a connected socket, up to [`MAX_MSGS`] per system
/// call (`sendmmsg`). Returns how many went out.
pub fn send_batch(fd: BorrowedFd<'_>, bufs: &[&[u8]]) -> io::Result<usize> {
    let n = bufs.len().min(MAX_MSGS);
    // SAFETY: iovec and mmsghdr are plain data; all-zero is a valid start.
    let (mut iov, mut msgs): ([libc::iovec; MAX_MSGS], [libc::mmsghdr; MAX_MSGS]) = unsafe { (zeroed(), zeroed()) };
    for (v, b) in iov.iter_mut().zip(&bufs[..n]) {
        v.iov_base = b.as_ptr() as *mut libc::c_void;
        v.iov_len = b.len();
    }
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()).take(n) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    sendmmsg(fd, &mut msgs[..n])
}

/// Like [`send_batch`] on a socket with virtio-net headers: each frame goes out behind its
/// header.
pub fn send_batch_vnet(fd: BorrowedFd<'_>, frames: &[(VnetHdr, &[u8])]) -> io::Result<usize> {
    let n = frames.len().min(MAX_MSGS);
    let mut hdrs = [[0u8; VNET_HDR_LEN]; MAX_MSGS];
    // SAFETY: iovec and mmsghdr are plain data; all-zero is a valid start.
    let (mut iov, mut msgs): ([[libc::iovec; 2]; MAX_MSGS], [libc::mmsghdr; MAX_MSGS]) =
        unsafe { (zeroed(), zeroed()) };
    for ((v, h), (hdr, frame)) in iov.iter_mut().zip(hdrs.iter_mut()).zip(&frames[..n]) {
        *h = hdr.emit();
        v[0].iov_base = h.as_mut_ptr().cast();
        v[0].iov_len = VNET_HDR_LEN;
        v[1].iov_base = frame.as_ptr() as *mut libc::c_void;
        v[1].iov_len = frame.len();
    }
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()).take(n) {
        m.msg_hdr.msg_iov = v.as_mut_ptr();
        m.msg_hdr.msg_iovlen = 2;
    }
    sendmmsg(fd, &mut msgs[..n])
}

fn sendmmsg(fd: BorrowedFd<'_>, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: the messages and the iovecs and buffers they point to live until the call
    // returns; the buffers are only read.
    let r = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Receives up to `bufs.len()` datagrams or frames in one system call (`recvmmsg`,
/// non-blocking once the first has arrived), each at `offset` in its buffer and at most `max`
/// bytes long; writes each full length into `lens` (longer than `max`: truncated). Returns
/// how many arrived.
pub fn recv_batch(
    fd: BorrowedFd<'_>,
    bufs: &mut [Vec<u8>],
    offset: usize,
    max: usize,
    lens: &mut [usize],
) -> io::Result<usize> {
    recv_batch_inner(fd, bufs, offset, max, lens, None)
}

/// Like [`recv_batch`] on a socket with virtio-net headers: each frame's header goes to
/// `hdrs` and does not count in its length.
pub fn recv_batch_vnet(
    fd: BorrowedFd<'_>,
    bufs: &mut [Vec<u8>],
    offset: usize,
    max: usize,
    lens: &mut [usize],
    hdrs: &mut [VnetHdr],
) -> io::Result<usize> {
    recv_batch_inner(fd, bufs, offset, max, lens, Some(hdrs))
}

fn recv_batch_inner(
    fd: BorrowedFd<'_>,
    bufs: &mut [Vec<u8>],
    offset: usize,
    max: usize,
    lens: &mut [usize],
    mut hdrs: Option<&mut [VnetHdr]>,
) -> io::Result<usize> {
    let mut n = bufs.len().min(lens.len()).min(MAX_MSGS);
    if let Some(h) = &hdrs {
        n = n.min(h.len());
    }
    if bufs[..n].iter().any(|b| b.len() < offset + max) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "receive buffer smaller than offset + max"));
    }
    let mut raw = [[0u8; VNET_HDR_LEN]; MAX_MSGS];
    // SAFETY: iovec and mmsghdr are plain data; all-zero is a valid start.
    let (mut iov, mut msgs): ([[libc::iovec; 2]; MAX_MSGS], [libc::mmsghdr; MAX_MSGS]) =
        unsafe { (zeroed(), zeroed()) };
    let parts = if hdrs.is_some() { 2 } else { 1 };
    for ((v, b), h) in iov.iter_mut().zip(bufs[..n].iter_mut()).zip(raw.iter_mut()) {
        let frame = libc::iovec { iov_base: b[offset..].as_mut_ptr().cast(), iov_len: max };
        if parts == 2 {
            v[0] = libc::iovec { iov_base: h.as_mut_ptr().cast(), iov_len: VNET_HDR_LEN };
            v[1] = frame;
        } else {
            v[0] = frame;
        }
    }
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()).take(n) {
        m.msg_hdr.msg_iov = v.as_mut_ptr();
        m.msg_hdr.msg_iovlen = parts;
    }
    // SAFETY: msgs, iovecs and buffers live until the call returns; the kernel writes at most
    // iov_len bytes into each buffer.
    let r = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_WAITFORONE | libc::MSG_TRUNC,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = r as usize;
    let head = if parts == 2 { VNET_HDR_LEN } else { 0 };
    for (l, m) in lens.iter_mut().zip(msgs.iter()).take(got) {
        *l = (m.msg_len as usize).saturating_sub(head);
    }
    if let Some(h) = hdrs.as_mut() {
        for (d, r) in h.iter_mut().zip(raw.iter()).take(got) {
            *d = VnetHdr::parse(r);
        }
    }
    Ok(got)
}

/// Names of all interfaces in the current network namespace.
pub fn link_names() -> io::Result<Vec<String>> {
    // SAFETY: if_nameindex returns a heap array terminated by a zero entry, or NULL on error;
    // we read it before freeing it exactly once.
    unsafe {
        let head = libc::if_nameindex();
        if head.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut names = Vec::new();
        let mut p = head;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(std::ffi::CStr::from_ptr((*p).if_name).to_string_lossy().into_owned());
            p = p.add(1);
        }
        libc::if_freenameindex(head);
        Ok(names)
    }
}

/// An AF_PACKET socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    /// Every frame in and out carries a virtio-net header (`PACKET_VNET_HDR`).
    vnet: bool,
}

const ETH_P_ALL: u16 = 0x0003;
/// `linux/if_packet.h` (Linux 6.2); not in the libc crate.
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: libc::c_int = 0x4000;

fn setsockopt<T>(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: val points to a live T of the size we pass.
    let r = unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (val as *const T).cast(), size_of::<T>() as libc::socklen_t)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a socket option into `out`, a plain-data value the kernel fills (at most its size).
fn getsockopt<T>(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, out: &mut T) -> io::Result<()> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: out is valid for writing size_of::<T>() bytes for the duration of the call, and
    // the callers' T are plain data for which any bytes are a valid value.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (out as *mut T).cast(), &mut len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl PacketSocket {
    fn open(ifindex: u32, protocol: u16) -> io::Result<Self> {
        let proto_be = protocol.to_be();
        // SAFETY: socket(2) with constant arguments; checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto_be),
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                return Err(io::Error::new(e.kind(), "AF_PACKET needs CAP_NET_RAW: run as root (or inside the lab)"));
            }
            return Err(e);
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; zero is valid before we fill it.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto_be;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll and we pass its exact size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex, vnet: false })
    }

    /// A receive socket for every frame on `ifindex`, joined to the fanout group
    /// `group` (if any) so that several workers share the interface by flow hash. A lone
    /// worker joins none: the fanout hashes every frame's flow even for one socket. Frames
    /// we send ourselves are not looped back.
    ///
    /// Frames carry a virtio-net header both ways: a sender's TSO super-packet (up to 64 KB)
    /// arrives whole with its segment size, and its partial checksum is marked instead of
    /// looking corrupt; forwarding it whole costs one copy in and one out instead of one per
    /// 1.5 KB segment.
    pub fn open_rx(ifindex: u32, group: Option<u16>, rcvbuf: usize) -> io::Result<Self> {
        let mut s = Self::open(ifindex, ETH_P_ALL)?;
        s.enable_vnet()?;
        let fd = s.fd.as_fd();
        let one: libc::c_int = 1;
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)?;
        let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &size)?;
        if let Some(group) = group {
            // The group has its own hook, which PACKET_IGNORE_OUTGOING above does not reach:
            // without this flag every frame our send sockets put out is cloned, hashed and
            // offered to the group. Kernels before 6.2 do not know the flag.
            let join = |flags: libc::c_int| {
                let fanout = libc::c_int::from(group) | (libc::PACKET_FANOUT_HASH as libc::c_int | flags) << 16;
                setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &fanout)
            };
            match join(PACKET_FANOUT_FLAG_IGNORE_OUTGOING) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => join(0)?,
                r => r?,
            }
        }
        // No PACKET_QDISC_BYPASS: it would hide our frames from tcpdump on the node, and on
        // a veth it gained nothing measurable.
        Ok(s)
    }

    /// Frames the kernel dropped because this socket's queue was full, since the last call
    /// (PACKET_STATISTICS resets on read).
    pub fn take_drops(&self) -> io::Result<u64> {
        let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        getsockopt(self.fd.as_fd(), libc::SOL_PACKET, libc::PACKET_STATISTICS, &mut st)?;
        Ok(u64::from(st.tp_drops))
    }

    /// A send-only socket: bound with protocol 0, it receives nothing.
    pub fn open_tx(ifindex: u32) -> io::Result<Self> {
        Self::open(ifindex, 0)
    }

    /// A send-only socket whose frames carry a virtio-net header, for the workers.
    pub fn open_tx_vnet(ifindex: u32) -> io::Result<Self> {
        let mut s = Self::open(ifindex, 0)?;
        s.enable_vnet()?;
        Ok(s)
    }

    /// Every frame in and out from now on carries a virtio-net header.
    fn enable_vnet(&mut self) -> io::Result<()> {
        let one: libc::c_int = 1;
        setsockopt(self.fd.as_fd(), libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)
            .map_err(|e| io::Error::new(e.kind(), format!("PACKET_VNET_HDR: {e}")))?;
        self.vnet = true;
        Ok(())
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sends one complete Ethernet frame out of the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        let mut hdr = VnetHdr::NONE.emit();
        let mut iov = [
            libc::iovec { iov_base: hdr.as_mut_ptr().cast(), iov_len: VNET_HDR_LEN },
            libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() },
        ];
        // Without the header option the frame goes out alone.
        let parts = if self.vnet { &mut iov[..] } else { &mut iov[1..] };
        // SAFETY: msghdr is plain data; all-zero is a valid start.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = parts.as_mut_ptr();
        msg.msg_iovlen = parts.len();
        // SAFETY: msg, the iovecs and the buffers they point to live until the call returns;
        // the buffers are only read.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize).saturating_sub(if self.vnet { VNET_HDR_LEN } else { 0 }))
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Attaches a classic BPF program that accepts nothing: the socket exists (which is what we
/// need from it) but never queues a packet.
fn attach_drop_all(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut code = [libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0 }]; // BPF_RET | BPF_K, 0
    let prog = libc::sock_fprog { len: 1, filter: code.as_mut_ptr() };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

/// Link and address events of this network namespace (rtnetlink's `RTMGRP_LINK`,
/// `RTMGRP_IPV4_IFADDR` and `RTMGRP_IPV6_IFADDR` groups): readable when an interface
/// appeared, vanished or changed, or an address came or went. The messages are only a
/// wake-up; the reader looks at what it cares about itself.
#[derive(Debug)]
pub struct LinkEvents {
    fd: OwnedFd,
}

impl LinkEvents {
    pub fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is valid before the fields are set.
        let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkEvents { fd })
    }

    /// Reads every pending message; whether there was any (an overrun, ENOBUFS, counts as
    /// one: events were lost, so look again).
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                any = true;
                continue;
            }
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                any = true;
                continue;
            }
            return any;
        }
    }
}

impl AsRawFd for LinkEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A raw IPv4 socket for protocol 4 (IPIP). Received packets include the outer header;
/// packets are sent with our own header (IP_HDRINCL) and routed by the kernel.
#[derive(Debug)]
pub struct RawIpipSocket {
    fd: OwnedFd,
    /// The socket's drop count when last read (the kernel's count never resets).
    drops_seen: std::sync::atomic::AtomicU32,
}

/// `asm-generic/socket.h`; not in the libc crate.
const SO_MEMINFO: libc::c_int = 55;

impl RawIpipSocket {
    /// `receive` false: the socket only sends, or only exists so that the kernel, which has
    /// no `ipip` module here, does not answer IPIP with ICMP protocol unreachable (a raw socket
    /// for the protocol counts as a receiver even when its filter drops everything).
    pub fn open(receive: bool, rcvbuf: usize) -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; checked below.
        let fd = unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, libc::IPPROTO_IPIP)
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                return Err(io::Error::new(
                    e.kind(),
                    "a raw IP socket needs CAP_NET_RAW: run as root (or inside the lab)",
                ));
            }
            return Err(e);
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        setsockopt(fd.as_fd(), libc::IPPROTO_IP, libc::IP_HDRINCL, &one)?;
        if receive {
            let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
            setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &size)?;
        } else {
            attach_drop_all(fd.as_fd())?;
        }
        Ok(RawIpipSocket { fd, drops_seen: Default::default() })
    }

    /// Packets the kernel dropped because this socket's queue was full, since the last call
    /// (read from `SO_MEMINFO`; a raw socket has no `PACKET_STATISTICS`).
    pub fn take_drops(&self) -> io::Result<u64> {
        let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
        getsockopt(self.fd.as_fd(), libc::SOL_SOCKET, SO_MEMINFO, &mut info)?;
        let total = info[libc::SK_MEMINFO_DROPS as usize];
        let before = self.drops_seen.swap(total, std::sync::atomic::Ordering::Relaxed);
        // The kernel's counter is 32 bits and wraps.
        Ok(u64::from(total.wrapping_sub(before)))
    }

    /// Receives one outer packet (IPv4 header first). Returns its full length.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes; MSG_TRUNC reports the real length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends a complete IPv4 packet to its destination address.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        if packet.len() < 20 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "short IPv4 packet"));
        }
        // SAFETY: zeroed sockaddr_in is valid; we fill family and address.
        let mut sin: libc::sockaddr_in = unsafe { zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes([packet[16], packet[17], packet[18], packet[19]]);
        // SAFETY: packet and sin are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sin as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsFd for RawIpipSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for RawIpipSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A UDP socket for the tunnel's datagrams (VXLAN on the tun data plane): bound to the
/// node's address and port, one per worker in a `SO_REUSEPORT` group so that the kernel
/// spreads flows over them. It reports each datagram's sender and the outer IPv4 TOS
/// (`IP_RECVTOS`), which decapsulation needs for ECN (RFC 6040).
#[derive(Debug)]
pub struct UdpTunnelSocket {
    fd: OwnedFd,
    drops_seen: std::sync::atomic::AtomicU32,
}

/// A datagram [`UdpTunnelSocket::recv`] read: its length, its sender and the outer TOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram {
    pub len: usize,
    pub src: std::net::SocketAddrV4,
    pub tos: u8,
    /// With [`UdpTunnelSocket::enable_gro`]: the datagrams' size when the kernel handed over
    /// several laid end to end (a UDP super-packet, the last datagram maybe shorter).
    pub segment: Option<u16>,
}

impl UdpTunnelSocket {
    pub fn open(addr: std::net::SocketAddrV4, rcvbuf: usize) -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, &one)?;
        setsockopt(fd.as_fd(), libc::IPPROTO_IP, libc::IP_RECVTOS, &one)?;
        if rcvbuf > 0 {
            let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
            setsockopt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &size)?;
        }
        let sin = sockaddr_in(addr);
        // SAFETY: sin is a valid sockaddr_in of the length passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("binding UDP {addr}: {e}")));
        }
        Ok(UdpTunnelSocket { fd, drops_seen: Default::default() })
    }

    /// A socket on `addr` that takes nothing (its filter drops every datagram) and only
    /// exists so that the kernel, whose copy of VXLAN the router has already handled, does
    /// not answer it with ICMP port unreachable.
    pub fn guard(addr: std::net::SocketAddrV4) -> io::Result<Self> {
        let s = Self::open(addr, 0)?;
        attach_drop_all(s.fd.as_fd())?;
        // A UDP super-packet is then dropped whole, not first cut into its datagrams.
        let one: libc::c_int = 1;
        setsockopt(s.fd.as_fd(), libc::SOL_UDP, libc::UDP_GRO, &one)?;
        Ok(s)
    }

    /// A socket that sends VXLAN from the node's address and a port of the kernel's choice
    /// (each worker its own: the underlay can tell the workers' flows apart by it, though not
    /// every inner flow, as RFC 7348's hashed port would), and takes nothing in. Linux's own
    /// VXLAN leaves DF clear by default; so does this socket.
    pub fn sender(node: std::net::Ipv4Addr) -> io::Result<Self> {
        let s = Self::open(std::net::SocketAddrV4::new(node, 0), 0)?;
        attach_drop_all(s.fd.as_fd())?;
        setsockopt(s.fd.as_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, &libc::IP_PMTUDISC_DONT)?;
        Ok(s)
    }

    /// Sends `payload` to `to` with the outer `tos` and `ttl`; with `segment` (UDP_SEGMENT)
    /// the kernel cuts it into datagrams of that many bytes, the last shorter, and keeps them
    /// one super-packet for as long as it can.
    pub fn send_to(
        &self,
        payload: &[u8],
        to: std::net::SocketAddrV4,
        tos: u8,
        ttl: u8,
        segment: Option<u16>,
    ) -> io::Result<usize> {
        let sin = sockaddr_in(to);
        let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
        // Room for three messages: IP_TOS and IP_TTL (an int each) and UDP_SEGMENT (a u16).
        let mut control = [0u64; 12];
        // SAFETY: msghdr is plain data; all-zero is a valid start.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&sin as *const libc::sockaddr_in as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        let mut used = 0;
        // SAFETY: msg_control is `control`, which has room for the three messages (each
        // CMSG_SPACE of at most an int, 16 bytes on 64-bit Linux); CMSG_FIRSTHDR/NXTHDR stay
        // within msg_controllen, and each value written is no longer than its cmsg_len says.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            let int = size_of::<libc::c_int>() as u32;
            for (level, kind, value) in [
                (libc::IPPROTO_IP, libc::IP_TOS, libc::c_int::from(tos)),
                (libc::IPPROTO_IP, libc::IP_TTL, libc::c_int::from(ttl)),
            ] {
                (*c).cmsg_level = level;
                (*c).cmsg_type = kind;
                (*c).cmsg_len = libc::CMSG_LEN(int) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), value);
                used += libc::CMSG_SPACE(int) as usize;
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            if let Some(size) = segment {
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
                used += libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
            }
        }
        msg.msg_controllen = used as _;
        // SAFETY: every pointer in msg refers to a live buffer of the length given; the
        // kernel only reads them.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// From now on a UDP super-packet that reaches this socket whole (as another node's
    /// VXLAN crosses the underlay) is read whole, with its datagram size (`UDP_GRO`), and
    /// datagrams of one flow arriving together may be merged alike.
    pub fn enable_gro(&self) -> io::Result<()> {
        let one: libc::c_int = 1;
        setsockopt(self.fd.as_fd(), libc::SOL_UDP, libc::UDP_GRO, &one)
    }

    /// Receives one datagram's payload into `buf`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<UdpDatagram> {
        // SAFETY: sockaddr_in, iovec and msghdr are plain data; all-zero is a valid start.
        let mut from: libc::sockaddr_in = unsafe { zeroed() };
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // Room for an IP_TOS and a UDP_GRO message (a cmsghdr and an int each, aligned).
        let mut control = [0u64; 8];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        // SAFETY: every pointer in msg refers to a live buffer of the length given.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut tos, mut segment) = (0, None);
        // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG macros walk it
        // within that length; IP_TOS carries at least one byte, UDP_GRO an int.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_TOS) => tos = *libc::CMSG_DATA(c),
                    (libc::SOL_UDP, libc::UDP_GRO) => {
                        let size = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                        segment = u16::try_from(size).ok().filter(|s| *s > 0);
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let ip = std::net::Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr));
        let src = std::net::SocketAddrV4::new(ip, u16::from_be(from.sin_port));
        Ok(UdpDatagram { len: n as usize, src, tos, segment })
    }

    /// Datagrams the kernel dropped because this socket's queue was full, since the last call.
    pub fn take_drops(&self) -> io::Result<u64> {
        let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
        getsockopt(self.fd.as_fd(), libc::SOL_SOCKET, SO_MEMINFO, &mut info)?;
        let total = info[libc::SK_MEMINFO_DROPS as usize];
        let before = self.drops_seen.swap(total, std::sync::atomic::Ordering::Relaxed);
        Ok(u64::from(total.wrapping_sub(before)))
    }
}

fn sockaddr_in(addr: std::net::SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: zeroed sockaddr_in is valid; we fill family, port and address.
    let mut sin: libc::sockaddr_in = unsafe { zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = addr.port().to_be();
    sin.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    sin
}

impl AsRawFd for UdpTunnelSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// One queue of a multi-queue TUN device carrying bare IPv4 packets (IFF_TUN | IFF_NO_PI).
#[derive(Debug)]
pub struct TunQueue {
    fd: OwnedFd,
}

impl TunQueue {
    /// Creates the device `name` (first call) or attaches another queue to it.
    pub fn open(name: &str) -> io::Result<Self> {
        let path = c"/dev/net/tun";
        // SAFETY: path is a valid C string; result checked.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("opening /dev/net/tun: {e}")));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = ifreq_for(name)?;
        // Every packet in and out carries a virtio-net header, and the kernel may hand us TCP
        // super-packets and partial checksums (TUNSETOFFLOAD), as AF_PACKET does with
        // PACKET_VNET_HDR: the pipeline cuts what must be cut, and we can write merged
        // super-packets back.
        let flags = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE | libc::IFF_VNET_HDR;
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads the ifreq we own.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("creating TUN device {name}: {e}")));
        }
        let offload = libc::c_ulong::from(libc::TUN_F_CSUM | libc::TUN_F_TSO4);
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, offload) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("TUNSETOFFLOAD on {name}: {e}")));
        }
        Ok(TunQueue { fd })
    }

    /// Reads one packet into `buf` and its virtio-net header; returns the packet's length.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, VnetHdr)> {
        let mut raw = [0u8; VNET_HDR_LEN];
        let iov = [
            libc::iovec { iov_base: raw.as_mut_ptr().cast(), iov_len: VNET_HDR_LEN },
            libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() },
        ];
        // SAFETY: both iovecs point to buffers we own, valid for their lengths.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(((n as usize).saturating_sub(VNET_HDR_LEN), VnetHdr::parse(&raw)))
    }

    /// Writes one packet with its virtio-net header ([`VnetHdr::NONE`] for a plain one).
    pub fn send(&self, hdr: VnetHdr, packet: &[u8]) -> io::Result<usize> {
        let raw = hdr.emit();
        let iov = [
            libc::iovec { iov_base: raw.as_ptr() as *mut libc::c_void, iov_len: VNET_HDR_LEN },
            libc::iovec { iov_base: packet.as_ptr() as *mut libc::c_void, iov_len: packet.len() },
        ];
        // SAFETY: both iovecs point to live buffers, only read by the call.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize).saturating_sub(VNET_HDR_LEN))
    }
}

impl AsFd for TunQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TunQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_described() {
        let lo = link_info("lo").expect("lo exists in every namespace");
        assert_eq!(lo.mac, MacAddr::ZERO);
        assert!(lo.ifindex >= 1);
        assert!(link_names().expect("names").iter().any(|n| n == "lo"));
    }

    /// Runs `f` on a thread of its own in a fresh network namespace, with `lo` up: traffic
    /// sent there stays there (root).
    fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: unshare(2) with a constant flag; it moves only this thread.
                let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "unshare(CLONE_NEWNET): {} (run the tests as root)", io::Error::last_os_error());
                let sock = ioctl_sock().expect("socket");
                let mut req = ifreq_for("lo").expect("ifreq");
                req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                // SAFETY: req is a valid ifreq naming lo with the flags to set.
                let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
                assert_eq!(r, 0, "lo up: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .expect("the namespaced thread runs")
        })
    }

    #[test]
    fn a_raw_socket_counts_what_its_full_queue_dropped() {
        in_new_netns(|| {
            let rx = RawIpipSocket::open(true, 0).expect("receive socket");
            let tx = RawIpipSocket::open(false, 0).expect("send socket");
            assert_eq!(rx.take_drops().expect("meminfo"), 0);
            // An IPIP packet to 127.0.0.1 with a 1000-byte body; nobody reads: the smallest
            // receive queue holds a few of them and the rest are dropped.
            let mut pkt = vec![0u8; 1020];
            let lo = std::net::Ipv4Addr::LOCALHOST;
            encap::ipv4::Repr {
                src: lo,
                dst: lo,
                protocol: encap::ipv4::Protocol::IpIp,
                tos: 0,
                ident: 0,
                dont_frag: false,
                ttl: 64,
                payload_len: 1000,
            }
            .emit(&mut pkt);
            let sent = 200u64;
            for _ in 0..sent {
                tx.send(&pkt).expect("send");
            }
            let mut buf = vec![0u8; 2048];
            let (mut queued, mut dropped) = (0u64, 0u64);
            // Loopback delivers from a softirq, which a busy machine may run a little later.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while queued + dropped < sent && std::time::Instant::now() < deadline {
                dropped += rx.take_drops().expect("meminfo");
                while rx.recv(&mut buf).is_ok() {
                    queued += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert!(dropped > 0, "queued {queued}");
            assert_eq!(queued + dropped, sent);
            // Counted once: the next read starts from there.
            assert_eq!(rx.take_drops().expect("meminfo"), 0);
        });
    }

    #[test]
    fn missing_interface_is_a_clear_error() {
        let e = link_info("nosuchif0").expect_err("missing");
        assert!(e.to_string().contains("nosuchif0"));
        assert!(link_info("").is_err());
        assert!(link_info("a-name-that-is-too-long").is_err());
    }
}
