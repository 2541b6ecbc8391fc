//! Layer compressors whose output bytes depend only on the input and the settings — never on the
//! number of threads, the machine, or how the input was chunked into writes.
//!
//! gzip is compressed pigz-style: the stream is cut into fixed [`GZIP_BLOCK_SIZE`] blocks, each
//! deflated independently on a compression thread pool with the previous block's last 32 KiB as
//! its dictionary and ended by a sync flush, so the concatenation is **one** deflate stream in
//! **one** gzip member (header mtime 0, no name). Block boundaries are fixed byte offsets, so 1 or
//! N threads give identical bytes. The writer's own thread keeps producing (tar, diff_id hashing)
//! while earlier blocks compress, and a bounded number of blocks is in flight, so memory does not
//! grow with layer size. zstd is single-threaded (zstd's own multithreading changes the output
//! with its worker setting); its parallelism comes from compressing layers concurrently.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{mpsc, Arc, OnceLock};

use flate2::{Compress, FlushCompress, Status};
use rayon::ThreadPool;

/// Uncompressed bytes per independently compressed gzip block. Part of the output format: a
/// change here changes every layer digest, so it is in [`crate::layer::Compression::cache_tag`].
pub const GZIP_BLOCK_SIZE: usize = 1 << 20;
/// Deflate's window: the dictionary carried from one block into the next.
const DICT_SIZE: usize = 32 * 1024;

/// The version of the deflate implementation, for cache keys: a zlib-rs upgrade may change the
/// compressed bytes of the same input. `tests::zlib_rs_version_matches_lockfile` keeps it honest.
pub const DEFLATE_IMPL: &str = "zlib-rs-0.6";

/// The process-wide compression pool, one thread per core.
fn default_pool() -> Arc<ThreadPool> {
    static POOL: OnceLock<Arc<ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("kiln-gzip-{i}"))
                .build()
                .expect("a thread pool can be created"),
        )
    })
    .clone()
}

/// A gzip writer producing one member from fixed-size blocks compressed in parallel.
pub struct ParallelGzWriter<W: Write> {
    inner: W,
    level: u32,
    pool: Arc<ThreadPool>,
    /// The block being filled.
    current: Vec<u8>,
    /// The last `DICT_SIZE` bytes of the block dispatched last.
    dict: Vec<u8>,
    /// Compressed blocks in input order, as they will arrive.
    in_flight: VecDeque<mpsc::Receiver<io::Result<Vec<u8>>>>,
    max_in_flight: usize,
    crc: crc32fast::Hasher,
    total: u64,
}

impl<W: Write> ParallelGzWriter<W> {
    pub fn new(inner: W, level: u32) -> io::Result<Self> {
        Self::with_pool(inner, level, default_pool())
    }

    /// Compresses on `pool` (tests use pools of different sizes to check the bytes agree).
    pub fn with_pool(mut inner: W, level: u32, pool: Arc<ThreadPool>) -> io::Result<Self> {
        // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown): nothing about the host.
        inner.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        let max_in_flight = 2 * pool.current_num_threads() + 2;
        Ok(ParallelGzWriter {
            inner,
            level,
            pool,
            current: Vec::with_capacity(GZIP_BLOCK_SIZE),
            dict: Vec::new(),
            in_flight: VecDeque::new(),
            max_in_flight,
            crc: crc32fast::Hasher::new(),
            total: 0,
        })
    }

    /// Compresses what is buffered, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let last = std::mem::take(&mut self.current);
        self.dispatch(last, true)?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // ISIZE is the input size modulo 2^32 (RFC 1952).
        trailer[4..].copy_from_slice(&(self.total as u32).to_le_bytes());
        self.inner.write_all(&trailer)?;
        Ok(self.inner)
    }

    fn dispatch(&mut self, block: Vec<u8>, is_final: bool) -> io::Result<()> {
        let next_dict = block[block.len().saturating_sub(DICT_SIZE)..].to_vec();
        let dict = std::mem::replace(&mut self.dict, next_dict);
        let level = self.level;
        let (tx, rx) = mpsc::sync_channel(1);
        if rayon::current_thread_index().is_some() {
            // Called from inside a rayon pool: blocking on our own pool's work could deadlock,
            // so compress here. Same function, same bytes.
            let _ = tx.send(deflate_block(&block, &dict, level, is_final));
        } else {
            self.pool.spawn_fifo(move || {
                let _ = tx.send(deflate_block(&block, &dict, level, is_final));
            });
        }
        self.in_flight.push_back(rx);
        while self.in_flight.len() > self.max_in_flight {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(rx) = self.in_flight.pop_front() {
            let compressed = rx
                .recv()
                .map_err(|_| io::Error::other("a gzip compression job was lost"))??;
            self.inner.write_all(&compressed)?;
        }
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let written = buf.len();
        self.crc.update(buf);
        self.total += buf.len() as u64;
        while !buf.is_empty() {
            let room = GZIP_BLOCK_SIZE - self.current.len();
            let (now, rest) = buf.split_at(room.min(buf.len()));
            self.current.extend_from_slice(now);
            buf = rest;
            if self.current.len() == GZIP_BLOCK_SIZE {
                let full =
                    std::mem::replace(&mut self.current, Vec::with_capacity(GZIP_BLOCK_SIZE));
                self.dispatch(full, false)?;
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Block boundaries are fixed offsets: flushing must not cut a block short.
        self.inner.flush()
    }
}

/// Raw-deflates one block primed with `dict`; non-final blocks end with a sync flush (byte
/// aligned, no end-of-stream marker) so blocks concatenate into one deflate stream.
fn deflate_block(block: &[u8], dict: &[u8], level: u32, is_final: bool) -> io::Result<Vec<u8>> {
    let mut z = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        z.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if is_final {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(block.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = z.total_in() as usize;
        let status = z
            .compress_vec(&block[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = z.total_in() as usize == block.len();
        let room_left = out.capacity() > out.len();
        match status {
            Status::StreamEnd => break,
            // A flush is complete once deflate stops filling the whole output buffer.
            Status::Ok | Status::BufError if done_input && room_left && !is_final => break,
            Status::Ok | Status::BufError => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Compressible but not trivial: text-like lines with varying numbers.
    fn sample(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut i: u64 = 0;
        while out.len() < len {
            i = i
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.extend_from_slice(
                format!(
                    "export function f{}(x) {{ return x * {}; }}\n",
                    i % 977,
                    i >> 40
                )
                .as_bytes(),
            );
        }
        out.truncate(len);
        out
    }

    fn compress_with(threads: usize, data: &[u8], chunk: usize) -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut w = ParallelGzWriter::with_pool(Vec::new(), 6, Arc::new(pool)).unwrap();
        for piece in data.chunks(chunk) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn output_is_one_gzip_member_that_round_trips() {
        let data = sample(GZIP_BLOCK_SIZE * 3 + 12345);
        let gz = compress_with(2, &data, 64 * 1024);
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        // GzDecoder reads only the first member: a full round trip proves there is one.
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let mut multi = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut multi)
            .unwrap();
        assert_eq!(multi, data);
        assert!(
            gz.len() < data.len() / 3,
            "compresses: {} of {}",
            gz.len(),
            data.len()
        );
    }

    #[test]
    fn bytes_do_not_depend_on_thread_count_or_write_chunking() {
        let data = sample(GZIP_BLOCK_SIZE * 11 + 777);
        let one = compress_with(1, &data, 1 << 20);
        assert_eq!(one, compress_with(4, &data, 1 << 20));
        assert_eq!(one, compress_with(3, &data, 4097));
        assert_eq!(one, compress_with(2, &data, data.len()));
    }

    #[test]
    fn empty_and_exact_block_inputs_round_trip() {
        for len in [0, 1, GZIP_BLOCK_SIZE, GZIP_BLOCK_SIZE * 8] {
            let data = sample(len);
            let gz = compress_with(2, &data, 100_000);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }

    #[test]
    fn zlib_rs_version_matches_lockfile() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .unwrap();
        let version = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"zlib-rs\""))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
            .unwrap()
            .trim_end_matches('"');
        let minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
        assert_eq!(
            DEFLATE_IMPL,
            format!("zlib-rs-{minor}"),
            "zlib-rs changed: update DEFLATE_IMPL so cached layers are not reused across versions"
        );
    }
}
