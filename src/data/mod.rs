//! Labelled datasets for classification: MNIST-style IDX pairs and CIFAR-10 binary batches.

pub mod idx;
