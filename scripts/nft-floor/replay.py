"""Sends the nf_tables batches `capture.c` recorded from `nft`, one `send` each, and
prints how long the kernel took for each: a netlink writer's floor for the same
changes (the batch is processed and committed inside `send`). Run it in a namespace
whose table is as `nft`'s was when it sent them."""
import socket, struct, sys, time
recs = []
with open(sys.argv[1], "rb") as f:
    data = f.read()
i = 0
while i < len(data):
    (n,) = struct.unpack_from("<Q", data, i); i += 8
    recs.append(data[i:i+n]); i += n
batches = [r for r in recs if struct.unpack_from("<H", r, 4)[0] == 0x10]
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.setsockopt(socket.SOL_SOCKET, 32 + 0, 1 << 30)  # SO_SNDBUFFORCE: a whole batch in one send
s.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)  # SO_RCVBUFFORCE
s.bind((0, 0))
tot = 0
for k, b in enumerate(batches):
    t = time.perf_counter(); s.send(b); d = time.perf_counter() - t; tot += d
    # The acks: errors among those that fit in the receive buffer.
    errs = 0
    s.setblocking(False)
    try:
        while True:
            m = s.recv(1 << 20)
            j = 0
            while j < len(m):
                ln, ty = struct.unpack_from("<IH", m, j)
                if ty == 2:
                    (e,) = struct.unpack_from("<i", m, j + 16)
                    if e != 0: errs += 1
                j += (ln + 3) & ~3
    except BlockingIOError: pass
    except OSError:  # ENOBUFS: acks dropped; `run` compares the tables instead
        pass
    s.setblocking(True)
    print(f"batch {k}: {len(b)} bytes, {d * 1000:.1f} ms, errors {errs}")
print(f"all {len(batches)} batches: {tot:.2f} s")
