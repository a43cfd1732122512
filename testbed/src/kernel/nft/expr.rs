//! The nf_tables expressions kube-proxy's rules are made of, written as libnftnl
//! writes them (`nft --debug=netlink` shows the same list for each rule).

use super::msg::Batch;

/// `NFT_REG_VERDICT`, `NFT_REG_1`, and the 32-bit registers after `NFT_REG32_00`
/// (a concatenation's fields go to 1, then 9, 10, ...).
pub const VERDICT: u32 = 0;
pub const REG1: u32 = 1;

/// `NFT_JUMP`, `NFT_GOTO`, `NFT_RETURN`, `NF_DROP` as the kernel codes verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Jump(String),
    Goto(String),
    Return,
    Drop,
}

impl Verdict {
    /// `NFTA_DATA_VERDICT` inside a nested `ty`: `NFTA_VERDICT_CODE` and the chain.
    pub fn write(&self, b: &mut Batch, ty: u16) {
        let (code, chain): (i32, Option<&str>) = match self {
            Verdict::Jump(c) => (-3, Some(c)),
            Verdict::Goto(c) => (-4, Some(c)),
            Verdict::Return => (-5, None),
            Verdict::Drop => (0, None),
        };
        b.nest(ty);
        b.nest(2);
        b.u32(1, code as u32);
        if let Some(c) = chain {
            b.str(2, c);
        }
        b.close();
        b.close();
    }
}

/// Numeric attributes, in order.
fn u32s(b: &mut Batch, attrs: &[(u16, u32)]) {
    for (ty, v) in attrs {
        b.u32(*ty, *v);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Loads `len` bytes at `offset` of the network (1) or transport (2) header.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `NFT_META_MARK` (3) or `NFT_META_L4PROTO` (16) into `dreg`.
    Meta {
        key: u32,
        dreg: u32,
    },
    /// The mark set from register 1.
    SetMark,
    /// `ct state` into register 1.
    CtState,
    /// `reg1 = (reg1 & mask) ^ xor`.
    Bitwise {
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Register 1 compared with `data` (`!=` when `neq`).
    Cmp {
        neq: bool,
        data: Vec<u8>,
    },
    Lookup {
        set: String,
        id: Option<u32>,
        /// A map's verdict goes to the verdict register.
        vmap: bool,
        inv: bool,
    },
    Verdict(Verdict),
    /// A constant into a register.
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    /// DNAT to the address in register 1 and the port in register 2.
    Dnat,
    /// Masquerade; `NF_NAT_RANGE_PROTO_RANDOM_FULLY` when `fully_random`.
    Masq {
        fully_random: bool,
    },
    /// ICMP port unreachable.
    Reject,
    /// `numgen random mod N` into register 1.
    Numgen {
        modulus: u32,
    },
    /// `fib saddr|daddr type` into register 1.
    FibType {
        daddr: bool,
    },
    /// Adds register 1 to the set (or refreshes its timeout).
    Update {
        set: String,
        id: Option<u32>,
    },
}

impl Expr {
    /// One `NFTA_LIST_ELEM` of the rule's `NFTA_RULE_EXPRESSIONS`.
    pub fn write(&self, b: &mut Batch) {
        b.nest(1);
        b.str(1, self.name());
        b.nest(2);
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => u32s(b, &[(1, *dreg), (2, *base), (3, *offset), (4, *len)]),
            Expr::Meta { key, dreg } => u32s(b, &[(2, *key), (1, *dreg)]),
            Expr::SetMark => u32s(b, &[(2, 3), (3, REG1)]),
            Expr::CtState => u32s(b, &[(2, 0), (1, REG1)]),
            Expr::Bitwise { len, mask, xor } => {
                u32s(b, &[(1, REG1), (2, REG1), (3, *len)]);
                b.value(4, mask);
                b.value(5, xor);
            }
            Expr::Cmp { neq, data } => {
                u32s(b, &[(1, REG1), (2, *neq as u32)]);
                b.value(3, data);
            }
            Expr::Lookup { set, id, vmap, inv } => {
                b.u32(2, REG1);
                if *vmap {
                    b.u32(3, VERDICT);
                }
                b.str(1, set);
                if let Some(id) = id {
                    b.u32(4, *id);
                }
                if *inv {
                    b.u32(5, 1); // NFT_LOOKUP_F_INV
                }
            }
            Expr::Verdict(v) => {
                b.u32(1, VERDICT);
                v.write(b, 2);
            }
            Expr::Immediate { dreg, data } => {
                b.u32(1, *dreg);
                b.value(2, data);
            }
            // NFT_NAT_DNAT, NFPROTO_IPV4, the address in register 1, the port in
            // register 2, NF_NAT_RANGE_PROTO_SPECIFIED.
            Expr::Dnat => u32s(b, &[(1, 1), (2, 2), (3, 1), (5, 2), (7, 2)]),
            Expr::Masq { fully_random } => {
                if *fully_random {
                    b.u32(1, 0x10); // NF_NAT_RANGE_PROTO_RANDOM_FULLY
                }
            }
            Expr::Reject => {
                b.u32(1, 0); // NFT_REJECT_ICMP_UNREACH
                b.bytes(2, &[3]); // port unreachable
            }
            // NFT_NG_RANDOM, offset 0.
            Expr::Numgen { modulus } => u32s(b, &[(1, REG1), (2, *modulus), (3, 1), (4, 0)]),
            // NFTA_FIB_F_DADDR or _SADDR, NFT_FIB_RESULT_ADDRTYPE.
            Expr::FibType { daddr } => u32s(b, &[(3, 1 + *daddr as u32), (2, 3), (1, REG1)]),
            Expr::Update { set, id } => {
                u32s(b, &[(4, REG1), (3, 1)]); // NFT_DYNSET_OP_UPDATE
                b.str(1, set);
                if let Some(id) = id {
                    b.u32(2, *id);
                }
            }
        }
        b.close();
        b.close();
    }

    fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } | Expr::SetMark => "meta",
            Expr::CtState => "ct",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Cmp { .. } => "cmp",
            Expr::Lookup { .. } => "lookup",
            Expr::Verdict(_) | Expr::Immediate { .. } => "immediate",
            Expr::Dnat => "nat",
            Expr::Masq { .. } => "masq",
            Expr::Reject => "reject",
            Expr::Numgen { .. } => "numgen",
            Expr::FibType { .. } => "fib",
            Expr::Update { .. } => "dynset",
        }
    }
}
