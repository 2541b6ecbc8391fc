//! Turning a complete raw deflate stream (as libdeflate writes one per call) into a non-final
//! piece of a longer stream: clear the last block's BFINAL bit and end the piece with an empty
//! stored block (what zlib's sync flush writes), so the next piece starts on a byte boundary.
//!
//! libdeflate reports neither where its last block starts nor where it ends, so the stream is
//! walked block by block, decoding (not expanding) every Huffman symbol.

struct Bits<'a> {
    data: &'a [u8],
    /// Bit position of the next unread bit.
    pos: usize,
}

impl Bits<'_> {
    #[inline]
    fn peek(&self, n: u32) -> u32 {
        // Up to 32 bits, LSB first; past the end reads as zeros (caught by `take`'s check).
        let byte = self.pos / 8;
        let word = match self.data.get(byte..byte + 8) {
            Some(b) => u64::from_le_bytes(b.try_into().unwrap()),
            None => {
                let mut w = [0u8; 8];
                let tail = self.data.get(byte..).unwrap_or(&[]);
                w[..tail.len()].copy_from_slice(tail);
                u64::from_le_bytes(w)
            }
        };
        ((word >> (self.pos % 8)) as u32) & (((1u64 << n) - 1) as u32)
    }

    #[inline]
    fn take(&mut self, n: u32) -> Result<u32, String> {
        let v = self.peek(n);
        self.skip(n as usize)?;
        Ok(v)
    }

    #[inline]
    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.pos += n;
        if self.pos > self.data.len() * 8 {
            return Err("deflate stream ends early".into());
        }
        Ok(())
    }
}

/// A canonical Huffman decoding table.
struct Huffman {
    /// Indexed by the next `bits` bits of the stream: symbol << 4 | code length (0: no code).
    table: Vec<u16>,
    bits: u32,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Result<Huffman, String> {
        let mut count = [0u16; 16];
        for &l in lengths {
            count[l as usize] += 1;
        }
        count[0] = 0;
        let bits = (1..16).rev().find(|&b| count[b] > 0).unwrap_or(1) as u32;
        let mut next = [0u32; 16];
        let mut code = 0u32;
        for b in 1..16 {
            code = (code + u32::from(count[b - 1])) << 1;
            next[b] = code;
        }
        let mut table = vec![0u16; 1 << bits];
        for (symbol, &len) in lengths.iter().enumerate() {
            if len == 0 {
                continue;
            }
            let code = next[len as usize];
            next[len as usize] += 1;
            // Huffman codes are packed most significant bit first: reverse for an LSB-first peek.
            let reversed = code.reverse_bits() >> (32 - u32::from(len));
            let mut index = reversed as usize;
            while index < table.len() {
                table[index] = (symbol as u16) << 4 | u16::from(len);
                index += 1 << len;
            }
        }
        Ok(Huffman { table, bits })
    }

    #[inline]
    fn decode(&self, bits: &mut Bits) -> Result<u16, String> {
        let entry = self.table[bits.peek(self.bits) as usize];
        let len = entry & 15;
        if len == 0 {
            return Err("invalid Huffman code".into());
        }
        bits.skip(usize::from(len))?;
        Ok(entry >> 4)
    }
}

const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// (bit offset of the final block's header, bit offset just past the final block).
fn final_block(data: &[u8]) -> Result<(usize, usize), String> {
    let mut bits = Bits { data, pos: 0 };
    loop {
        let header = bits.pos;
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => {
                bits.pos = bits.pos.div_ceil(8) * 8;
                let len = bits.take(16)? as usize;
                let nlen = bits.take(16)? as usize;
                if len != !nlen & 0xffff {
                    return Err("stored block length check fails".into());
                }
                bits.pos += 8 * len;
                if bits.pos > data.len() * 8 {
                    return Err("stored block ends early".into());
                }
            }
            kind @ (1 | 2) => {
                let (litlen, dist) = if kind == 1 {
                    let mut l = [8u8; 288];
                    l[144..256].fill(9);
                    l[256..280].fill(7);
                    (Huffman::new(&l)?, Huffman::new(&[5u8; 30])?)
                } else {
                    let hlit = bits.take(5)? as usize + 257;
                    let hdist = bits.take(5)? as usize + 1;
                    let hclen = bits.take(4)? as usize + 4;
                    let mut cl = [0u8; 19];
                    for &i in &CODE_LENGTH_ORDER[..hclen] {
                        cl[i] = bits.take(3)? as u8;
                    }
                    let cl = Huffman::new(&cl)?;
                    let mut lengths = Vec::with_capacity(hlit + hdist);
                    while lengths.len() < hlit + hdist {
                        match cl.decode(&mut bits)? {
                            sym @ 0..=15 => lengths.push(sym as u8),
                            16 => {
                                let prev = *lengths.last().ok_or("repeat with no length")?;
                                let n = 3 + bits.take(2)? as usize;
                                lengths.extend(std::iter::repeat_n(prev, n));
                            }
                            17 => {
                                let n = 3 + bits.take(3)? as usize;
                                lengths.extend(std::iter::repeat_n(0, n));
                            }
                            _ => {
                                let n = 11 + bits.take(7)? as usize;
                                lengths.extend(std::iter::repeat_n(0, n));
                            }
                        }
                    }
                    if lengths.len() != hlit + hdist {
                        return Err("code lengths overrun".into());
                    }
                    (
                        Huffman::new(&lengths[..hlit])?,
                        Huffman::new(&lengths[hlit..])?,
                    )
                };
                loop {
                    let sym = litlen.decode(&mut bits)?;
                    match sym {
                        0..=255 => {}
                        256 => break,
                        257..=285 => {
                            bits.take(u32::from(LENGTH_EXTRA[usize::from(sym - 257)]))?;
                            let d = dist.decode(&mut bits)?;
                            let extra = *DIST_EXTRA.get(usize::from(d)).ok_or("bad distance")?;
                            bits.take(u32::from(extra))?;
                        }
                        _ => return Err("bad length symbol".into()),
                    }
                }
            }
            _ => return Err("reserved block type".into()),
        }
        if last {
            return Ok((header, bits.pos));
        }
    }
}

/// Makes the complete raw deflate stream `out` a non-final piece: its last block no longer
/// final, followed by an empty stored block, ending on a byte boundary.
pub fn make_non_final(out: &mut Vec<u8>) -> Result<(), String> {
    let (header, end) = final_block(out)?;
    out[header / 8] &= !(1u8 << (header % 8));
    // The stored block's 3 header bits (all zero) go right after the last block, then zero
    // padding to the byte boundary, then LEN = 0, NLEN = 0xffff.
    let padded = (end + 3).div_ceil(8);
    out.truncate(end.div_ceil(8));
    if end % 8 != 0 {
        let last = out.len() - 1;
        out[last] &= (1u8 << (end % 8)) - 1;
    }
    out.resize(padded, 0);
    out.extend_from_slice(&[0, 0, 0xff, 0xff]);
    Ok(())
}
