// Device ceilings for `spinr bench`: an FMA-bound kernel. Each invocation runs a dependent
// chain on eight independent vec4 accumulators (enough to hide FMA latency), then writes one
// value so the compiler cannot drop the work.

@group(0) @binding(0) var<storage, read_write> sink: array<vec4<f32>>;

const FMA_ITERS: u32 = 512u;

@compute @workgroup_size(256)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let m = vec4<f32>(0.999);
    let k = vec4<f32>(1e-3);
    var a0 = vec4<f32>(f32(i) * 1e-9);
    var a1 = a0 + 0.1;
    var a2 = a0 + 0.2;
    var a3 = a0 + 0.3;
    var a4 = a0 + 0.4;
    var a5 = a0 + 0.5;
    var a6 = a0 + 0.6;
    var a7 = a0 + 0.7;
    for (var t = 0u; t < FMA_ITERS; t++) {
        a0 = fma(a0, m, k);
        a1 = fma(a1, m, k);
        a2 = fma(a2, m, k);
        a3 = fma(a3, m, k);
        a4 = fma(a4, m, k);
        a5 = fma(a5, m, k);
        a6 = fma(a6, m, k);
        a7 = fma(a7, m, k);
    }
    // Every invocation writes (rows beyond the sink wrap around), so no work is dead code.
    sink[i % arrayLength(&sink)] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}
