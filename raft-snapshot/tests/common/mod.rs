//! Shared helpers: a streamed, reproducible key-value-like state.
#![allow(dead_code)]

use std::io::{self, Read, Write};

/// A reproducible pseudo-random stream of `key=value` records that looks like
/// a key-value store's serialized state, generated on the fly.
pub struct KvState {
    rng: u64,
    remaining: u64,
    buf: Vec<u8>,
    pos: usize,
    n: u64,
}

impl KvState {
    pub fn new(seed: u64, bytes: u64) -> KvState {
        KvState {
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            remaining: bytes,
            buf: Vec::with_capacity(64 << 10),
            pos: 0,
            n: 0,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn refill(&mut self) {
        self.buf.clear();
        self.pos = 0;
        while self.buf.len() < 60 << 10 {
            self.n += 1;
            let r = self.next();
            let user = r % 1_000_000;
            let field = ["name", "email", "balance", "updated_at", "tags"][(r >> 20) as usize % 5];
            let _ = write!(self.buf, "user/{user:08}/{field}\t");
            match field {
                "balance" => {
                    let _ = write!(self.buf, "{}.{:02}", r >> 40, r % 100);
                }
                "updated_at" => {
                    let _ = write!(
                        self.buf,
                        "2024-{:02}-{:02}T{:02}:{:02}:00Z",
                        1 + r % 12,
                        1 + (r >> 8) % 28,
                        (r >> 16) % 24,
                        (r >> 24) % 60
                    );
                }
                _ => {
                    // Some random bytes, some repetitive text.
                    let len = 8 + (r >> 32) as usize % 48;
                    for i in 0..len {
                        let b = if i % 3 == 0 {
                            self.next() as u8
                        } else {
                            b"abcdefghij"[(i + user as usize) % 10]
                        };
                        self.buf.push(b);
                    }
                }
            }
            self.buf.push(b'\n');
        }
    }
}

impl Read for KvState {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        if self.pos == self.buf.len() {
            self.refill();
        }
        let n = out
            .len()
            .min(self.buf.len() - self.pos)
            .min(self.remaining as usize);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A sink that checks what is written against a second copy of a stream.
pub struct Compare<R: Read> {
    pub expected: R,
    pub matched: u64,
    scratch: Vec<u8>,
}

impl<R: Read> Compare<R> {
    pub fn new(expected: R) -> Compare<R> {
        Compare {
            expected,
            matched: 0,
            scratch: Vec::new(),
        }
    }

    /// True if the expected stream has nothing left.
    pub fn at_end(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.expected.read(&mut b), Ok(0))
    }
}

impl<R: Read> Write for Compare<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.scratch.resize(buf.len(), 0);
        self.expected.read_exact(&mut self.scratch)?;
        if self.scratch != buf {
            return Err(io::Error::other(format!(
                "restored state differs within bytes {}..{}",
                self.matched,
                self.matched + buf.len() as u64
            )));
        }
        self.matched += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
