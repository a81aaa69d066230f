//! Images as sparse implicit neural representations (DESIGN.md §4). Work in progress.
