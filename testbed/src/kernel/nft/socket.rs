//! Sends a compiled transaction to the kernel of a namespace over a
//! `NETLINK_NETFILTER` socket. The kernel processes and commits a batch inside the
//! `send` (as `nft` relies on too), so what is waiting on the socket right after
//! it is the whole answer: nothing when every message was taken, an error for each
//! one that was not (and then nothing of the batch is applied).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::Compiled;

const NETLINK_NETFILTER: libc::c_int = 12;
const NLMSG_ERROR: u16 = 2;

/// A netlink socket opened inside the namespace mounted at `netns` (a short-lived
/// thread enters it; the socket stays there).
fn open_in(netns: &Path) -> io::Result<OwnedFd> {
    let file = File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            // SAFETY: plain socket(2); the descriptor is owned at once.
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    NETLINK_NETFILTER,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is a new descriptor nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .join()
        .expect("the socket thread does not panic")
    })
}

fn set_buffer(fd: &OwnedFd, opt: libc::c_int, size: usize) -> io::Result<()> {
    let v = size.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt with a pointer to a c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes the transaction into the namespace's kernel. An error names the line of
/// the first message the kernel refused, and why.
pub fn apply(netns: &Path, tx: &Compiled) -> Result<(), String> {
    let fd = open_in(netns).map_err(|e| format!("open a netfilter socket: {e}"))?;
    // Force the buffers: a cold sync's batch is megabytes, sent at once.
    set_buffer(&fd, libc::SO_SNDBUFFORCE, tx.bytes.len() * 2 + 65536)
        .and_then(|_| set_buffer(&fd, libc::SO_RCVBUFFORCE, 4 << 20))
        .map_err(|e| format!("size the netfilter socket's buffers: {e}"))?;
    // SAFETY: send(2) of a buffer we own, to the kernel (the socket is unbound and
    // unconnected: the kernel is netlink's default destination).
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            tx.bytes.as_ptr() as *const libc::c_void,
            tx.bytes.len(),
            0,
            &to as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(format!("send the batch: {}", io::Error::last_os_error()));
    }
    refusals(&fd, tx)
}

/// The errors waiting on the socket, the first named by its line.
fn refusals(fd: &OwnedFd, tx: &Compiled) -> Result<(), String> {
    let mut buf = vec![0u8; 1 << 16];
    let mut first = None;
    let mut count = 0;
    loop {
        // SAFETY: recv(2) into our buffer, without waiting.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                break;
            }
            return Err(format!("read the kernel's answer: {e}"));
        }
        let mut at = 0;
        let n = n as usize;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
            if kind == NLMSG_ERROR && at + 36 <= n {
                let errno = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                let seq = u32::from_ne_bytes(buf[at + 28..at + 32].try_into().expect("4 bytes"));
                if errno != 0 {
                    count += 1;
                    first.get_or_insert((errno, seq));
                }
            }
            if len < 16 {
                break;
            }
            at += (len + 3) & !3;
        }
    }
    match first {
        None => Ok(()),
        Some((errno, seq)) => {
            let why = io::Error::from_raw_os_error(-errno);
            let line = tx
                .line_of(seq)
                .map_or("the batch".to_string(), |l| format!("line {l}"));
            Err(format!(
                "the kernel refused {line}: {why}{}",
                if count > 1 {
                    format!(" ({count} messages refused)")
                } else {
                    String::new()
                }
            ))
        }
    }
}
