//! The grid of a sweep: its cells in one canonical order, grouped so that cells sharing an
//! expensive computation stay together, and the shards that split it between jobs.
//!
//! Canonical order: method (iht, imp, paper), then neurons m, then seed, then nonzeros s, each
//! ascending, s fastest. The cells of one (method, m, seed) are a *group*: consecutive, and
//! handed to a runner together (IMP prunes one dense network per (method, m, seed) down
//! through every s). Shard `i/N` runs the groups whose position in canonical order is `i`
//! modulo `N`, so a group is never split between shards.

use crate::error::{Error, Param, Result};
use serde::{Deserialize, Serialize};

/// What a sweep trains, which decides the metric of its heatmaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Image fits (implicit neural representations): PSNR.
    Inr,
    /// Planted networks: test PSNR.
    Plant,
    /// Classification: test accuracy.
    Classify,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Inr => "inr",
            Task::Plant => "plant",
            Task::Classify => "classify",
        }
    }
}

/// How one cell is trained.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// IHT with spinr's choices.
    Iht,
    /// Iterative magnitude pruning of the dense network (the paper's baseline).
    Imp,
    /// IHT with the paper's code's choices.
    Paper,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Iht, Method::Imp, Method::Paper];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Iht => "iht",
            Method::Imp => "imp",
            Method::Paper => "paper",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// One run of the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cell {
    pub method: Method,
    pub neurons: usize,
    pub nonzeros: usize,
    pub seed: u64,
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} m={} s={} seed={}",
            self.method.as_str(),
            self.neurons,
            self.nonzeros,
            self.seed
        )
    }
}

/// The axes of a sweep, each sorted ascending without repeats (so the order the flags were
/// given in does not change the cells, their order or the files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    task: Task,
    methods: Vec<Method>,
    neurons: Vec<usize>,
    nonzeros: Vec<usize>,
    seeds: Vec<u64>,
}

/// Sorts an axis, refusing an empty one and repeats (a repeat is almost surely a typo).
fn axis<T: Ord + Copy + std::fmt::Debug>(
    param: Param,
    mut v: Vec<T>,
    zero: Option<T>,
) -> Result<Vec<T>> {
    if v.is_empty() {
        return Err(Error::invalid(param, "give at least one value"));
    }
    v.sort();
    if let Some(w) = v.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::invalid(param, format!("{:?} is given twice", w[0])));
    }
    if zero.is_some() && v.first() == zero.as_ref() {
        return Err(Error::invalid(param, "must be at least 1"));
    }
    Ok(v)
}

impl Grid {
    pub fn new(
        task: Task,
        methods: Vec<Method>,
        neurons: Vec<usize>,
        nonzeros: Vec<usize>,
        seeds: Vec<u64>,
    ) -> Result<Grid> {
        Ok(Grid {
            task,
            methods: axis(Param::Method, methods, None)?,
            neurons: axis(Param::Neurons, neurons, Some(0))?,
            nonzeros: axis(Param::Nonzeros, nonzeros, Some(0))?,
            seeds: axis(Param::Seed, seeds, None)?,
        })
    }

    pub fn task(&self) -> Task {
        self.task
    }
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }
    pub fn neurons(&self) -> &[usize] {
        &self.neurons
    }
    pub fn nonzeros(&self) -> &[usize] {
        &self.nonzeros
    }
    pub fn seeds(&self) -> &[u64] {
        &self.seeds
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.methods.len() * self.neurons.len() * self.seeds.len() * self.nonzeros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every group in canonical order: the cells of one (method, m, seed), s ascending.
    pub fn groups(&self) -> Vec<Vec<Cell>> {
        let mut groups = Vec::new();
        for &method in &self.methods {
            for &neurons in &self.neurons {
                for &seed in &self.seeds {
                    let cells = self.nonzeros.iter().map(|&nonzeros| Cell {
                        method,
                        neurons,
                        nonzeros,
                        seed,
                    });
                    groups.push(cells.collect());
                }
            }
        }
        groups
    }

    /// Every cell in canonical order.
    pub fn cells(&self) -> Vec<Cell> {
        self.groups().into_iter().flatten().collect()
    }

    /// The groups that `shard` runs: every `count`-th group from the `index`-th.
    pub fn shard_groups(&self, shard: Shard) -> Vec<Vec<Cell>> {
        self.groups()
            .into_iter()
            .enumerate()
            .filter(|(g, _)| g % shard.count == shard.index)
            .map(|(_, cells)| cells)
            .collect()
    }

    /// The cell's position in canonical order, or `None` for a cell outside the grid.
    pub fn position(&self, cell: &Cell) -> Option<usize> {
        let mi = self.methods.binary_search(&cell.method).ok()?;
        let ni = self.neurons.binary_search(&cell.neurons).ok()?;
        let ki = self.seeds.binary_search(&cell.seed).ok()?;
        let si = self.nonzeros.binary_search(&cell.nonzeros).ok()?;
        let group = (mi * self.neurons.len() + ni) * self.seeds.len() + ki;
        Some(group * self.nonzeros.len() + si)
    }
}

/// Part `index` of `count` of a grid (`i/N` on the command line, 0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole grid.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 {
            return Err(Error::invalid(
                Param::Shard,
                "the number of shards must be ≥ 1",
            ));
        }
        if index >= count {
            return Err(Error::invalid(
                Param::Shard,
                format!(
                    "shard {index} of {count} does not exist: shards are numbered 0 to {}",
                    count - 1
                ),
            ));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let bad = || format!("{s:?} is not a shard: give I/N with 0 ≤ I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i: usize = i.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n).map_err(|e| match e {
            Error::Invalid { msg, .. } => msg,
            e => e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid::new(
            Task::Inr,
            vec![Method::Imp, Method::Iht],
            vec![50, 10],
            vec![100, 20, 500],
            vec![1, 0],
        )
        .unwrap()
    }

    #[test]
    fn cells_come_in_canonical_order_whatever_the_flag_order() {
        let g = grid();
        assert_eq!(g.methods(), &[Method::Iht, Method::Imp]);
        let cells = g.cells();
        assert_eq!(cells.len(), g.len());
        assert_eq!(cells.len(), 2 * 2 * 2 * 3);
        let short: Vec<String> = cells[..7].iter().map(|c| c.to_string()).collect();
        assert_eq!(
            short,
            [
                "iht m=10 s=20 seed=0",
                "iht m=10 s=100 seed=0",
                "iht m=10 s=500 seed=0",
                "iht m=10 s=20 seed=1",
                "iht m=10 s=100 seed=1",
                "iht m=10 s=500 seed=1",
                "iht m=50 s=20 seed=0",
            ]
        );
        for (i, c) in cells.iter().enumerate() {
            assert_eq!(g.position(c), Some(i), "{c}");
        }
        let outside = Cell {
            nonzeros: 21,
            ..cells[0]
        };
        assert_eq!(g.position(&outside), None);
    }

    #[test]
    fn shards_partition_the_groups() {
        let g = grid();
        for count in 1..=9 {
            let mut seen: Vec<Cell> = (0..count)
                .flat_map(|i| g.shard_groups(Shard::new(i, count).unwrap()))
                .inspect(|group| {
                    // A group is one (method, m, seed) with every s.
                    assert_eq!(group.len(), 3);
                    assert!(group.iter().all(|c| (c.method, c.neurons, c.seed)
                        == (group[0].method, group[0].neurons, group[0].seed)));
                })
                .flatten()
                .collect();
            seen.sort_by_key(|c| g.position(c));
            assert_eq!(seen, g.cells(), "{count} shards");
        }
        // Round robin over the 8 groups.
        let s1 = g.shard_groups("1/3".parse().unwrap());
        assert_eq!(s1.len(), 3);
        assert_eq!(s1[0][0].to_string(), "iht m=10 s=20 seed=1");
    }

    #[test]
    fn shard_parsing() {
        assert_eq!("0/2".parse::<Shard>(), Ok(Shard { index: 0, count: 2 }));
        assert_eq!("1/2".parse::<Shard>(), Ok(Shard { index: 1, count: 2 }));
        assert_eq!(
            " 3 / 16 ".parse::<Shard>(),
            Ok(Shard {
                index: 3,
                count: 16
            })
        );
        let e = "2/2".parse::<Shard>().unwrap_err();
        assert!(e.contains("0 to 1"), "{e}");
        for bad in ["x/3", "1", "1/", "/3", "-1/3", "0/0", "1/2/3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn bad_axes_are_refused_naming_the_quantity() {
        let e = Grid::new(Task::Inr, vec![Method::Iht], vec![10, 10], vec![1], vec![0]);
        assert!(matches!(
            e,
            Err(Error::Invalid {
                param: Param::Neurons,
                ..
            })
        ));
        let e = Grid::new(Task::Inr, vec![Method::Iht], vec![10], vec![0, 5], vec![0]);
        assert!(matches!(
            e,
            Err(Error::Invalid {
                param: Param::Nonzeros,
                ..
            })
        ));
        let e = Grid::new(Task::Inr, vec![], vec![10], vec![5], vec![0]);
        assert!(matches!(
            e,
            Err(Error::Invalid {
                param: Param::Method,
                ..
            })
        ));
        let e = Grid::new(Task::Inr, vec![Method::Iht], vec![10], vec![5], vec![]);
        assert!(matches!(
            e,
            Err(Error::Invalid {
                param: Param::Seed,
                ..
            })
        ));
    }
}
