//! A trained classifier as a stack of sparse layers, evaluated on the host (`n·s` work).

use crate::error::{Error, Param, Result};
use crate::sparse::SparseVec;

/// One layer: `m` hidden units `relu(w_j · x)` over `d` inputs (`w` sparse, flat `j·d + k`),
/// and its outputs: the plain sum of the units (`output` None: spinr's fused model, one
/// output) or `C` outputs `Σ_j relu(w_j·x) · output[j·C + c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub m: usize,
    pub d: usize,
    pub w: SparseVec,
    pub output: Option<Vec<f32>>,
}

impl Layer {
    /// Outputs per sample.
    pub fn outputs(&self) -> usize {
        match &self.output {
            None => 1,
            Some(o) => o.len() / self.m.max(1),
        }
    }

    pub fn check(&self) -> Result<()> {
        if self.m == 0 || self.d == 0 {
            return Err(Error::invalid(
                Param::Model,
                "a layer without units or inputs",
            ));
        }
        if self.w.indices.len() != self.w.values.len()
            || self.w.indices.windows(2).any(|p| p[0] >= p[1])
            || self
                .w
                .indices
                .last()
                .is_some_and(|&i| i as usize >= self.m * self.d)
        {
            return Err(Error::invalid(
                Param::Model,
                "layer weights must have increasing indices below m·d",
            ));
        }
        crate::error::check_finite("layer weights", &self.w.values)?;
        if let Some(o) = &self.output {
            if o.is_empty() || o.len() % self.m != 0 {
                return Err(Error::invalid(
                    Param::Model,
                    format!("{} output weights for {} units", o.len(), self.m),
                ));
            }
            crate::error::check_finite("output weights", o)?;
        }
        Ok(())
    }

    /// `relu(w_j · x)` for every unit.
    pub fn hidden(&self, x: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.m, 0.0);
        for (&i, &v) in self.w.indices.iter().zip(&self.w.values) {
            let (j, k) = (i as usize / self.d, i as usize % self.d);
            out[j] += v * x[k];
        }
        for h in out.iter_mut() {
            *h = h.max(0.0);
        }
    }

    /// The layer's outputs for one input.
    pub fn scores(&self, x: &[f32], hidden: &mut Vec<f32>, out: &mut Vec<f32>) {
        self.hidden(x, hidden);
        out.clear();
        match &self.output {
            None => out.push(hidden.iter().sum()),
            Some(o) => {
                let c = self.outputs();
                out.resize(c, 0.0);
                for (j, &h) in hidden.iter().enumerate() {
                    if h != 0.0 {
                        for (s, &wo) in out.iter_mut().zip(&o[j * c..(j + 1) * c]) {
                            *s += h * wo;
                        }
                    }
                }
            }
        }
    }

    /// Nonzero weights, the output layer's included.
    pub fn nonzeros(&self) -> usize {
        self.w.values.iter().filter(|v| **v != 0.0).count()
            + self
                .output
                .as_ref()
                .map_or(0, |o| o.iter().filter(|v| **v != 0.0).count())
    }
}

/// Layers applied in turn: every layer but the last is a feature map `x ↦ relu(W x)`; the
/// last gives the class scores.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseNet {
    /// Multiplies the raw 0–255 inputs.
    pub input_scale: f32,
    pub layers: Vec<Layer>,
}

impl SparseNet {
    pub fn check(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::invalid(Param::Model, "a network without layers"));
        }
        for l in &self.layers {
            l.check()?;
        }
        for p in self.layers.windows(2) {
            if p[1].d != p[0].m {
                return Err(Error::invalid(
                    Param::Model,
                    format!("a layer of {} units feeds one of {} inputs", p[0].m, p[1].d),
                ));
            }
        }
        Ok(())
    }

    pub fn inputs(&self) -> usize {
        self.layers[0].d
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(1, Layer::outputs)
    }

    pub fn nonzeros(&self) -> usize {
        self.layers.iter().map(Layer::nonzeros).sum()
    }

    /// The scores of every sample of a sample-major raw (0–255) matrix, `n × outputs`.
    pub fn scores(&self, raw: &[u8]) -> Vec<f32> {
        use rayon::prelude::*;
        let d = self.inputs();
        let c = self.outputs();
        let mut out = vec![0f32; raw.len() / d * c];
        out.par_chunks_mut(c).zip(raw.par_chunks(d)).for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(x, h, s), (o, row)| {
                x.clear();
                x.extend(row.iter().map(|&v| v as f32 * self.input_scale));
                for l in &self.layers[..self.layers.len() - 1] {
                    l.hidden(x, h);
                    std::mem::swap(x, h);
                }
                self.layers[self.layers.len() - 1].scores(x, h, s);
                o.copy_from_slice(s);
            },
        );
        out
    }

    /// The predicted class of every sample: the largest score, or `score ≥ 0.5` with one
    /// output.
    pub fn predict(&self, raw: &[u8]) -> Vec<u8> {
        let c = self.outputs();
        let s = self.scores(raw);
        if c == 1 {
            return s.iter().map(|&v| (v >= 0.5) as u8).collect();
        }
        s.chunks(c)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (k, &v)| if v > b.1 { (k, v) } else { b },
                    )
                    .0 as u8
            })
            .collect()
    }

    /// Hidden features `relu(W x)` of the first `depth` layers for every sample of `d` raw
    /// inputs (the inputs of layer `depth` when training layer by layer), `n × m`.
    pub fn features(&self, raw: &[u8], d: usize, depth: usize) -> Vec<f32> {
        let n = raw.len() / d;
        let mut cur: Vec<f32> = raw.iter().map(|&v| v as f32 * self.input_scale).collect();
        let mut width = d;
        let mut h = Vec::new();
        for l in &self.layers[..depth] {
            let mut next = Vec::with_capacity(n * l.m);
            for row in cur.chunks(width) {
                l.hidden(row, &mut h);
                next.extend_from_slice(&h);
            }
            cur = next;
            width = l.m;
        }
        cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_and_two_block_layers_score_as_written() {
        // Two units over three inputs: w_0 = (1, 0, -1), w_1 = (0, 2, 0).
        let w = SparseVec::from_pairs(vec![(0, 1.0), (2, -1.0), (4, 2.0)]);
        let fused = Layer {
            m: 2,
            d: 3,
            w: w.clone(),
            output: None,
        };
        let (mut h, mut s) = (Vec::new(), Vec::new());
        fused.scores(&[3.0, 1.0, 1.0], &mut h, &mut s);
        assert_eq!(h, vec![2.0, 2.0]);
        assert_eq!(s, vec![4.0]);
        let two = Layer {
            m: 2,
            d: 3,
            w,
            output: Some(vec![1.0, -1.0, 0.5, 2.0]),
        };
        two.scores(&[3.0, 1.0, 1.0], &mut h, &mut s);
        assert_eq!(s, vec![3.0, 2.0]);
        let net = SparseNet {
            input_scale: 1.0,
            layers: vec![two],
        };
        assert_eq!(net.predict(&[3, 1, 1, 0, 0, 1]), vec![0, 0]);
        assert_eq!(net.predict(&[0, 1, 0]), vec![1]);
    }
}
