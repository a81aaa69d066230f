//! Model files (safetensors). Work in progress.
