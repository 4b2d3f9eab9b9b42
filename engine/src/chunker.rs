//! Content-defined chunking of a stream that arrives in pieces.
//!
//! FastCDC finds a cut point by looking only at bytes from the start of the current
//! chunk, so cutting a buffer and carrying the unfinished tail into the next round gives
//! exactly the cuts a single pass over the whole stream would.

use fastcdc::v2020::FastCDC;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        // Small enough that a local edit dirties little, large enough that per-chunk
        // overhead (index entry, nonce, tag) stays well under 0.1 %.
        Self {
            min: 64 * 1024,
            avg: 256 * 1024,
            max: 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Whether FastCDC accepts these sizes (it panics on others). The config that carries
    /// them is plaintext, so they are checked on open: a config edited to raise `max`
    /// cannot raise the cap on what a chunk may inflate to past FastCDC's own ceiling
    /// (16 MiB), nor make a backup panic.
    pub fn check(&self) -> Result<(), String> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let Self { min, avg, max } = *self;
        let within = |v: u32, lo: u32, hi: u32| (lo..=hi).contains(&v);
        if within(min, MINIMUM_MIN, MINIMUM_MAX)
            && within(avg, AVERAGE_MIN, AVERAGE_MAX)
            && within(max, MAXIMUM_MIN, MAXIMUM_MAX)
            && min <= avg
            && avg <= max
        {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes min {min}, avg {avg}, max {max} are outside what the chunker \
                 supports (min {MINIMUM_MIN}–{MINIMUM_MAX}, avg {AVERAGE_MIN}–{AVERAGE_MAX}, \
                 max {MAXIMUM_MIN}–{MAXIMUM_MAX}, min ≤ avg ≤ max)"
            ))
        }
    }

    /// The largest chunk the chunker makes, which is also the most a stored chunk may
    /// decompress to.
    pub fn max_chunk(&self) -> usize {
        self.max as usize
    }
}

pub struct Chunker {
    params: ChunkerParams,
    buf: Vec<u8>,
}

impl Chunker {
    pub fn new(params: ChunkerParams) -> Self {
        Self {
            params,
            buf: Vec::with_capacity(params.max as usize * 2),
        }
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes; returns the chunks that are complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() < self.params.max as usize * 2 {
            return Vec::new();
        }
        self.cut(false)
    }

    /// Ends the stream; returns the remaining chunks.
    pub fn finish(&mut self) -> Vec<Vec<u8>> {
        self.cut(true)
    }

    fn cut(&mut self, at_end: bool) -> Vec<Vec<u8>> {
        let p = self.params;
        let cuts: Vec<(usize, usize)> = FastCDC::new(&self.buf, p.min, p.avg, p.max)
            .map(|c| (c.offset, c.length))
            .collect();
        let keep = if at_end {
            cuts.len()
        } else {
            cuts.len().saturating_sub(1)
        };
        let chunks: Vec<Vec<u8>> = cuts[..keep]
            .iter()
            .map(|&(o, l)| self.buf[o..o + l].to_vec())
            .collect();
        let consumed: usize = cuts[..keep].iter().map(|&(_, l)| l).sum();
        self.buf.drain(..consumed);
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min: 256,
            avg: 1024,
            max: 4096,
        }
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    proptest! {
        /// Feeding the stream in pieces gives the same chunks as one pass.
        #[test]
        fn pieces_give_the_same_cuts(seed in any::<u64>(), len in 0usize..60_000, piece in 1usize..9000) {
            let data = pseudo_random(len, seed);
            let mut whole = Chunker::new(params());
            let mut a = whole.push(&data);
            a.extend(whole.finish());
            let mut pieces = Chunker::new(params());
            let mut b = Vec::new();
            for p in data.chunks(piece) { b.extend(pieces.push(p)); }
            b.extend(pieces.finish());
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.concat(), data);
        }
    }

    #[test]
    fn an_edit_in_the_middle_changes_few_chunks() {
        let data = pseudo_random(400_000, 7);
        let mut edited = data.clone();
        edited[200_000] ^= 0xff;
        let run = |d: &[u8]| {
            let mut c = Chunker::new(params());
            let mut v = c.push(d);
            v.extend(c.finish());
            v
        };
        let (a, b) = (run(&data), run(&edited));
        let set: std::collections::HashSet<_> = a.iter().collect();
        let new = b.iter().filter(|c| !set.contains(c)).count();
        assert!(new <= 3, "{new} of {} chunks changed", b.len());
    }
}
