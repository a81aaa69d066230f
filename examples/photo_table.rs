//! The photo table of README's "The DCT yardstick" from `spinr sweep` folders (made by
//! `benches/sweeps/photos/run.sh`):
//! `cargo run --release --example photo_table -- RUNS [BASE_RUNS]`
//!
//! Every folder under `RUNS` with a `sweep.json` is read (its `results.csv`, method `iht`);
//! a cell of the table is one photo at one size and `s`: the DCT yardstick at that `s`, then
//! the median PSNR over seeds. With `BASE_RUNS` (the same sweeps run by another build, e.g.
//! `SPINR=old/spinr benches/sweeps/photos/run.sh runs/base`) the cell shows the base's median
//! too, and the last rows give the median over photos of each photo's gain (median over its
//! seeds of now, minus the base's) and its range. Bold: spinr above the DCT. The last row
//! counts the photos ahead of the harder yardstick too, the DCT in a colour fit's own planes
//! (`dct_planes_psnr`; a gray photo's is its DCT).

use spinr::sweep::summary::median;
use spinr::sweep::{Manifest, Method, Results, RESULTS_FILE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// (photo, longer side, s) → (DCT PSNR, the planes' DCT PSNR, PSNR of each seed).
type Table = BTreeMap<(String, usize, usize), (f64, f64, Vec<f64>)>;

fn sweep_dirs(root: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if root.join("sweep.json").is_file() {
        out.push(root.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries.into_iter().filter(|p| p.is_dir()) {
        sweep_dirs(&p, out)?;
    }
    Ok(())
}

fn read(root: &Path) -> anyhow::Result<Table> {
    let mut dirs = Vec::new();
    sweep_dirs(root, &mut dirs)?;
    let mut table = Table::new();
    for dir in dirs {
        let Some(manifest) = Manifest::read(&dir)? else {
            continue;
        };
        let results = Results::load(&dir.join(RESULTS_FILE), &manifest.grid)?;
        let photo = manifest.options["image"]
            .as_str()
            .and_then(|p| Path::new(p).file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow::anyhow!("{}: not an image sweep", dir.display()))?;
        for cell in manifest.grid.cells() {
            if cell.method != Method::Iht || !results.contains(&cell) {
                continue;
            }
            let num = |c: &str| results.number(&cell, c);
            let (Some(h), Some(w), Some(psnr)) = (num("height"), num("width"), num("psnr")) else {
                anyhow::bail!("{}: {cell} lacks height, width or psnr", dir.display());
            };
            let entry = table
                .entry((photo.clone(), h.max(w) as usize, cell.nonzeros))
                .or_insert((f64::NAN, f64::NAN, Vec::new()));
            if let Some(d) = num("dct_psnr") {
                entry.0 = d;
                entry.1 = num("dct_planes_psnr").unwrap_or(d);
            }
            entry.2.push(psnr);
        }
    }
    Ok(table)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (now, base) = match args.as_slice() {
        [now] => (read(Path::new(now))?, None),
        [now, base] => (read(Path::new(now))?, Some(read(Path::new(base))?)),
        _ => anyhow::bail!("usage: photo_table RUNS [BASE_RUNS]"),
    };
    let columns: Vec<(usize, usize)> = {
        let mut c: Vec<_> = now.keys().map(|(_, n, s)| (*n, *s)).collect();
        c.sort();
        c.dedup();
        c
    };
    let photos: Vec<&String> = {
        let mut p: Vec<_> = now.keys().map(|(p, _, _)| p).collect();
        p.dedup();
        p
    };
    let what = if base.is_some() {
        "DCT / base / now"
    } else {
        "DCT / spinr"
    };
    print!("| photo |");
    for (n, s) in &columns {
        print!(" {n}², s = {s}: {what} |");
    }
    println!("\n|---|{}", "---|".repeat(columns.len()));
    let mut gains: Vec<Vec<f64>> = vec![Vec::new(); columns.len()];
    let mut beats = vec![0usize; columns.len()];
    let mut beats_planes = vec![0usize; columns.len()];
    for photo in &photos {
        print!("| {photo} |");
        for (c, (n, s)) in columns.iter().enumerate() {
            let Some((dct, planes_dct, seeds)) = now.get(&((*photo).clone(), *n, *s)) else {
                print!(" – |");
                continue;
            };
            let Some(m) = median(seeds) else {
                print!(" – |");
                continue;
            };
            if m > *planes_dct {
                beats_planes[c] += 1;
            }
            let spinr = if m > *dct {
                beats[c] += 1;
                format!("**{m:.2}**")
            } else {
                format!("{m:.2}")
            };
            match base
                .as_ref()
                .and_then(|b| b.get(&((*photo).clone(), *n, *s)))
            {
                Some((_, _, old)) => {
                    let o = median(old).unwrap_or(f64::NAN);
                    gains[c].push(m - o);
                    print!(" {dct:.2} / {o:.2} / {spinr} |");
                }
                None if base.is_some() => print!(" {dct:.2} / – / {spinr} |"),
                None => print!(" {dct:.2} / {spinr} |"),
            }
        }
        println!();
    }
    if base.is_some() {
        print!("| median gain over the base |");
        for g in &gains {
            match median(g) {
                None => print!(" – |"),
                Some(x) => print!(" {x:+.2} dB |"),
            }
        }
        print!("\n| (range) |");
        for g in &gains {
            let (lo, hi) = g
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                    (l.min(x), h.max(x))
                });
            match g.is_empty() {
                true => print!(" – |"),
                false => print!(" {lo:+.2} … {hi:+.2} |"),
            }
        }
        println!();
    }
    print!("| beats the DCT |");
    for b in &beats {
        print!(" {b} of {} |", photos.len());
    }
    print!("\n| beats the DCT in its planes |");
    for b in &beats_planes {
        print!(" {b} of {} |", photos.len());
    }
    println!();
    Ok(())
}
