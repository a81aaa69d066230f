// Gate-mask words assembled in workgroup memory: one atomic OR per open lane. Portable; the
// fallback of bits_subgroup.wgsl (appended to every kernel file, see kernels.rs).

var<workgroup> mbits4: array<atomic<u32>, TILE_MASK_BLOCKS * TILE_MASK_NEURONS>;

// Sets bit `lane` of word `slot` if `open`. All lanes of a warp pass the same slot.
fn set_bit(slot: u32, open: bool, lane: u32) {
    if (open) {
        atomicOr(&mbits4[slot], 1u << lane);
    }
}
