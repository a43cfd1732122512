// Preloaded into `nft`: appends every buffer it sends on a netlink socket to the
// file $NLDUMP (an 8-byte little-endian length, then the bytes), so that `replay.py`
// can send the same batches again without `nft`. Build: cc -shared -fPIC -o
// capture.so capture.c -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static void dump(int fd, const struct iovec *iov, size_t n) {
    struct sockaddr_storage ss; socklen_t l = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &l) || ss.ss_family != AF_NETLINK) return;
    const char *p = getenv("NLDUMP"); if (!p) return;
    FILE *f = fopen(p, "ab"); if (!f) return;
    uint64_t total = 0; for (size_t i = 0; i < n; i++) total += iov[i].iov_len;
    fwrite(&total, 8, 1, f);
    for (size_t i = 0; i < n; i++) fwrite(iov[i].iov_base, 1, iov[i].iov_len, f);
    fclose(f);
}
ssize_t sendmsg(int fd, const struct msghdr *m, int flags) {
    if (!real_sendmsg) real_sendmsg = dlsym(RTLD_NEXT, "sendmsg");
    dump(fd, m->msg_iov, m->msg_iovlen);
    return real_sendmsg(fd, m, flags);
}
ssize_t sendto(int fd, const void *b, size_t len, int flags, const struct sockaddr *a, socklen_t al) {
    if (!real_sendto) real_sendto = dlsym(RTLD_NEXT, "sendto");
    struct iovec iov = { (void *)b, len };
    dump(fd, &iov, 1);
    return real_sendto(fd, b, len, flags, a, al);
}
