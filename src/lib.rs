//! spinr: sparse ReLU networks trained by iterative hard thresholding, on any GPU or the CPU.
//!
//! The model, the IHT step and the memory rule are described in `ARCHITECTURE.md`:
//! a signal `w ∈ R^{m·d}` with `s` nonzeros is the only thing stored; the sensing matrix
//! `A = [D_1 X | … | D_m X]` is applied on the fly by a [`backend::Backend`].

pub mod backend;
pub mod bench;
pub mod budget;
pub mod checkpoint;
pub mod classify;
pub mod cli;
pub mod data;
pub mod error;
pub mod iht;
pub mod imp;
pub mod inr;
pub mod metrics;
pub mod model;
pub mod output;
pub mod pace;
pub mod plant;
pub mod problem;
pub mod rng;
pub mod samples;
pub mod sparse;
pub mod sweep;
pub mod train;

pub use error::{Error, Result};
