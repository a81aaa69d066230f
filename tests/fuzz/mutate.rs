//! Mutations for `tests/fuzz_readers.rs`: generic (bit flips, truncation, insertion, deletion,
//! duplication, extreme integers) and format-aware (PNG/JPEG dimensions, PNG CRCs, numbers in
//! the safetensors header), and the case count.

/// SplitMix64: deterministic and dependency-free.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Values that break size arithmetic: zero, one, powers of two, maxima.
pub const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x1_0000,
    100_000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    u64::MAX,
];

/// One to four generic mutations: bit flips, truncation, insertion, deletion, duplication,
/// and interesting integers (8 to 64 bits, either endianness) written anywhere.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>) -> &'static str {
    let mut what = "";
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        what = match rng.below(7) {
            0 if len > 0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(len);
                    data[i] ^= 1 << rng.below(8);
                }
                "bit flips"
            }
            1 => {
                data.truncate(rng.below(len + 1));
                "truncation"
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
                "insertion"
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = (1 + rng.below(16)).min(len - at);
                data.drain(at..at + n);
                "deletion"
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = (1 + rng.below(64)).min(len - at);
                let chunk = data[at..at + n].to_vec();
                let to = rng.below(len + 1);
                data.splice(to..to, chunk);
                "duplication"
            }
            5 if len > 0 => {
                data[rng.below(len)] = [0, 0xff, 0x7f, 0x80][rng.below(4)];
                "byte set"
            }
            _ if len > 0 => {
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                let bytes = if rng.chance(50) {
                    v.to_be_bytes()[8 - width..].to_vec()
                } else {
                    v.to_le_bytes()[..width].to_vec()
                };
                let at = rng.below(len);
                for (k, b) in bytes.into_iter().enumerate() {
                    if at + k < len {
                        data[at + k] = b;
                    }
                }
                "interesting integer"
            }
            _ => "none",
        };
    }
    what
}

/// Cases for a reader: `base` times `SPINR_FUZZ_SCALE` (default 1).
pub fn cases(base: usize) -> usize {
    let scale = std::env::var("SPINR_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1);
    base * scale.max(1)
}

/// Rewrites one number in the safetensors JSON header (a shape, an offset or a metadata value
/// such as m, d, height) to an extreme, and fixes the header length so the change is parsed.
pub fn mutate_safetensors_header(rng: &mut Rng, data: &mut Vec<u8>) -> bool {
    if data.len() < 8 {
        return false;
    }
    let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    if n > data.len() - 8 {
        return false;
    }
    let header = &data[8..8 + n];
    let runs: Vec<(usize, usize)> = {
        let mut v = vec![];
        let mut i = 0;
        while i < header.len() {
            if header[i].is_ascii_digit() {
                let s = i;
                while i < header.len() && header[i].is_ascii_digit() {
                    i += 1;
                }
                v.push((s, i));
            } else {
                i += 1;
            }
        }
        v
    };
    if runs.is_empty() {
        return false;
    }
    let (s, e) = runs[rng.below(runs.len())];
    let repl = [
        "0",
        "1",
        "4294967295",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999",
        "100000",
        "1e30",
        "-1",
    ][rng.below(10)];
    let mut h = header.to_vec();
    h.splice(s..e, repl.bytes());
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(&h);
    out.extend(&data[8 + n..]);
    *data = out;
    true
}

/// Recomputes every PNG chunk CRC, so mutations reach the decoder past the checksum.
pub fn fix_png_crcs(data: &mut [u8]) {
    let mut at = 8;
    while at + 12 <= data.len() {
        let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e + 4 <= data.len()) else {
            return;
        };
        let mut crc = flate2::Crc::new();
        crc.update(&data[at + 4..end]);
        data[end..end + 4].copy_from_slice(&crc.sum().to_be_bytes());
        at = end + 4;
    }
}

/// Sets the dimensions in a PNG's IHDR or a JPEG's SOF segment to extreme values.
pub fn set_dimensions(rng: &mut Rng, data: &mut [u8]) {
    let pick =
        |rng: &mut Rng| [0u32, 1, 0xffff, 65536, 100_000, 0x7fff_ffff, u32::MAX][rng.below(7)];
    if data.starts_with(b"\x89PNG") && data.len() >= 33 {
        for at in [16, 20] {
            if rng.chance(70) {
                data[at..at + 4].copy_from_slice(&pick(rng).to_be_bytes());
            }
        }
    } else if let Some(sof) = data
        .windows(2)
        .position(|w| w[0] == 0xff && (0xc0..=0xc2).contains(&w[1]))
    {
        // SOF: marker, length (2), precision (1), height (2), width (2).
        for at in [sof + 5, sof + 7] {
            if at + 2 <= data.len() && rng.chance(70) {
                data[at..at + 2].copy_from_slice(&(pick(rng) as u16).to_be_bytes());
            }
        }
    }
}
