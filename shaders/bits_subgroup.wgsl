// Gate-mask words assembled with a subgroup OR: the warp combines its 32 lanes' bits in
// registers and one lane writes the word, instead of 32 atomics on one address. Used where
// the adapter has 32-wide subgroups (the kernels' warps are then subgroups: lanes 32w..32w+31
// of local_invocation_index); bits_atomic.wgsl otherwise.

var<workgroup> mbits4: array<atomic<u32>, TILE_MASK_BLOCKS * TILE_MASK_NEURONS>;

// Sets bit `lane` (= local_invocation_index % 32) of word `slot` if `open`. All lanes of a
// subgroup pass the same slot; call from subgroup-uniform control flow. Lane 0 of each
// subgroup writes the word.
fn set_bit(slot: u32, open: bool, lane: u32) {
    let word = subgroupOr(select(0u, 1u << lane, open));
    if (lane == 0u && word != 0u) {
        atomicOr(&mbits4[slot], word);
    }
}
