//! `deflate-cmp FILE [RUNS]`: compresses FILE (a tar) the way Kiln's `ParallelGzWriter` cuts it —
//! 1 MiB blocks — on one thread, with
//! - zlib-rs (flate2): each block primed with the previous block's last 32 KiB and ended by a
//!   sync flush (Kiln's format today), and
//! - libdeflate: each block compressed whole and alone (libdeflate has no preset dictionary and no
//!   sync flush, so this is the best case for it: no stitching cost counted),
//!
//! printing, per level, the median MB/s of one core and the compressed/input ratio.
mod stitch;

use std::io::Read;

use flate2::{Compress, Compression, FlushCompress, Status};

const BLOCK: usize = 1 << 20;
const DICT: usize = 32 * 1024;

fn zlib_rs(data: &[u8], level: u32) -> usize {
    let mut total = 0;
    let mut out = Vec::with_capacity(BLOCK + 4096);
    for (i, block) in data.chunks(BLOCK).enumerate() {
        let mut z = Compress::new(Compression::new(level), false);
        if i > 0 {
            let start = i * BLOCK;
            z.set_dictionary(&data[start - DICT..start]).unwrap();
        }
        let last = (i + 1) * BLOCK >= data.len();
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        out.clear();
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity());
            }
            let consumed = z.total_in() as usize;
            let status = z.compress_vec(&block[consumed..], &mut out, flush).unwrap();
            let done = z.total_in() as usize == block.len();
            match status {
                Status::StreamEnd => break,
                _ if done && out.capacity() > out.len() && !last => break,
                _ => {}
            }
        }
        total += out.len();
    }
    total
}

fn libdeflate(data: &[u8], level: i32) -> usize {
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
    let mut out = vec![0u8; c.deflate_compress_bound(BLOCK)];
    data.chunks(BLOCK)
        .map(|block| c.deflate_compress(block, &mut out).unwrap())
        .sum()
}

/// libdeflate per block, stitched into one deflate stream (the cost Kiln would pay).
fn libdeflate_stitched(data: &[u8], level: i32) -> Vec<u8> {
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
    let mut all = Vec::new();
    let mut out = vec![0u8; c.deflate_compress_bound(BLOCK)];
    let blocks = data.len().div_ceil(BLOCK).max(1);
    for i in 0..blocks {
        let block = &data[(i * BLOCK).min(data.len())..((i + 1) * BLOCK).min(data.len())];
        let n = c.deflate_compress(block, &mut out).unwrap();
        let mut piece = out[..n].to_vec();
        if i + 1 < blocks {
            stitch::make_non_final(&mut piece).unwrap();
        }
        all.extend_from_slice(&piece);
    }
    all
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

/// This thread's CPU seconds: on a machine shared with other builds, wall time measures the
/// neighbours; CPU time measures the compressor.
fn thread_cpu() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a valid pointer to a timespec-shaped struct; Linux x86_64/aarch64 layout.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.sec as f64 + t.nsec as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: deflate-cmp FILE [RUNS] [EVERY]");
    let runs: usize = args.next().map_or(5, |r| r.parse().unwrap());
    // Every EVERY-th 1 MiB block of FILE (a sample from all over it, to keep runs short).
    let every: usize = args.next().map_or(1, |r| r.parse().unwrap());
    let data: Vec<u8> = std::fs::read(&path)
        .unwrap()
        .chunks(BLOCK)
        .step_by(every)
        .flatten()
        .copied()
        .collect();
    let mb = data.len() as f64 / 1e6;
    type Case<'a> = (&'a str, i32, Box<dyn Fn() -> usize + 'a>);
    let mut cases: Vec<Case> = Vec::new();
    for level in [1, 4, 6] {
        let data = &data;
        cases.push((
            "zlib-rs, dict + sync flush",
            level,
            Box::new(move || zlib_rs(data, level as u32)),
        ));
    }
    for level in [1, 4, 6, 9] {
        let data = &data;
        cases.push((
            "libdeflate, independent blocks",
            level,
            Box::new(move || libdeflate(data, level)),
        ));
    }
    for level in [4, 6] {
        let data = &data;
        let check = libdeflate_stitched(data, level);
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&check[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(
            back == *data,
            "stitched stream does not inflate to the input"
        );
        cases.push((
            "libdeflate, stitched into one stream",
            level,
            Box::new(move || libdeflate_stitched(data, level).len()),
        ));
    }
    // Round robin, so a change in the machine's load hits every case alike.
    let mut times = vec![Vec::new(); cases.len()];
    let mut sizes = vec![0; cases.len()];
    for _ in 0..runs {
        for (i, (_, _, f)) in cases.iter().enumerate() {
            let t = thread_cpu();
            sizes[i] = f();
            times[i].push(thread_cpu() - t);
        }
    }
    println!("input {path} (every {every}th MiB): {mb:.1} MB, {runs} runs, 1 thread, 1 MiB blocks");
    println!("| compressor | level | MB/s per core (median, thread CPU time) | ratio | bytes |");
    println!("|---|---|---|---|---|");
    for (i, (name, level, _)) in cases.iter().enumerate() {
        let secs = median(times[i].clone());
        println!(
            "| {name} | {level} | {:.0} | {:.4} | {} |",
            mb / secs,
            sizes[i] as f64 / data.len() as f64,
            sizes[i]
        );
    }
}
