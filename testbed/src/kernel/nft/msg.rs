//! nf_tables netlink messages, byte by byte: a message is a `nlmsghdr`, a `nfgenmsg`
//! and attributes (type, length, value, padded to 4 bytes; nested ones flagged
//! `NLA_F_NESTED`), as libnftnl writes them. A batch is messages between
//! `NFNL_MSG_BATCH_BEGIN` and `NFNL_MSG_BATCH_END`, committed by the kernel at once.

/// `NFNL_SUBSYS_NFTABLES`, in the high byte of a message type.
const SUBSYS: u16 = 10;
const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;
/// `NFPROTO_IPV4`: the family of `table ip ...`.
const FAMILY_IP: u8 = 2;

/// `NFT_MSG_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NewTable = 0,
    DelTable = 2,
    NewChain = 3,
    DelChain = 5,
    NewRule = 6,
    DelRule = 8,
    NewSet = 9,
    DelSet = 11,
    NewSetElem = 12,
    DelSetElem = 14,
}

/// A batch being written: its bytes, and the sequence number of each message.
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// Where the open message and the open nested attributes start.
    open: Vec<usize>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// A batch with its `BATCH_BEGIN`.
    pub fn new() -> Self {
        let mut b = Batch {
            buf: Vec::new(),
            seq: 0,
            open: Vec::new(),
        };
        b.control(BATCH_BEGIN);
        b
    }

    /// The sequence number the next message gets.
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    fn header(&mut self, kind: u16, flags: u16, family: u8, res_id: u16) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set at the end
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf
            .extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.seq += 1;
    }

    fn control(&mut self, kind: u16) {
        self.header(kind, 0, 0, SUBSYS);
        self.end_message();
    }

    /// Starts a message of `kind` about the table `table` (family ip).
    pub fn begin(&mut self, kind: Kind, flags: u16, table: &str) {
        self.header((SUBSYS << 8) | kind as u16, flags, FAMILY_IP, 0);
        // NFTA_{TABLE,CHAIN,RULE,SET,SET_ELEM_LIST}_TABLE (or _NAME) is 1 in each.
        self.str(1, table);
    }

    /// Ends the open message.
    pub fn end_message(&mut self) {
        let start = self.open.pop().expect("a message is open");
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// The batch with its `BATCH_END`, to send.
    pub fn finish(mut self) -> Vec<u8> {
        self.control(BATCH_END);
        self.buf
    }

    pub fn bytes(&mut self, ty: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len() + (4 - len % 4) % 4, 0);
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(ty, &v);
    }

    /// A big-endian u32, as every number nf_tables takes.
    pub fn u32(&mut self, ty: u16, v: u32) {
        self.bytes(ty, &v.to_be_bytes());
    }

    pub fn u64(&mut self, ty: u16, v: u64) {
        self.bytes(ty, &v.to_be_bytes());
    }

    /// Opens a nested attribute; [`Batch::close`] ends it.
    pub fn nest(&mut self, ty: u16) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    /// Ends the open nested attribute. The writers keep each under 64 KiB (an
    /// attribute's length is 16 bits).
    pub fn close(&mut self) {
        let start = self.open.pop().expect("a nested attribute is open");
        let len = u16::try_from(self.buf.len() - start).expect("a nested attribute under 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// `NFTA_DATA_VALUE` inside a nested `ty`.
    pub fn value(&mut self, ty: u16, v: &[u8]) {
        self.nest(ty);
        self.bytes(1, v);
        self.close();
    }
}

/// Userdata as libnftnl writes it: `type`, `length`, value, one after another.
#[derive(Default)]
pub struct Udata(pub Vec<u8>);

impl Udata {
    pub fn put(&mut self, ty: u8, v: &[u8]) -> &mut Self {
        self.0.push(ty);
        self.0.push(v.len() as u8);
        self.0.extend_from_slice(v);
        self
    }

    /// A comment: NUL-terminated, of type 0 in tables, chains, rules and elements.
    pub fn comment(ty: u8, text: &str) -> Udata {
        let mut v = text.as_bytes().to_vec();
        v.push(0);
        let mut u = Udata::default();
        u.put(ty, &v);
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_padded_and_measured() {
        let mut b = Batch::new();
        b.begin(Kind::DelTable, 0, "kube-proxy");
        b.end_message();
        let bytes = b.finish();
        // BEGIN (20) + DELTABLE (20 + 4 + "kube-proxy\0" padded to 12) + END (20).
        assert_eq!(bytes.len(), 20 + 36 + 20);
        assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 36);
        assert_eq!(&bytes[24..26], &((10u16 << 8) | 2).to_ne_bytes());
        // The attribute: length 15 (4 + 11), type 1, then the name and a pad byte.
        assert_eq!(&bytes[40..44], &[15, 0, 1, 0]);
        assert_eq!(&bytes[44..56], b"kube-proxy\0\0");
        // BEGIN and END name the subsystem, big-endian.
        assert_eq!(&bytes[18..20], &[0, 10]);
    }
}
