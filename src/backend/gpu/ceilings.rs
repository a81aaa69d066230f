//! The device's ceilings for `spinr bench`: copy bandwidth and FMA throughput, each timed on
//! enough work (grown until one submission takes ≥ 50 ms) that submission overhead vanishes.

use super::GpuContext;
use crate::backend::profile::Ceilings;
use crate::error::Result;
use std::time::Instant;

/// FLOPs per invocation of `fma_peak`: iterations × 8 accumulators × 4 lanes × 2.
const FLOPS_PER_INVOCATION: f64 = 512.0 * 8.0 * 4.0 * 2.0;
const MIN_SECONDS: f64 = 0.05;

/// Runs `record(scale)` until one submission takes at least `MIN_SECONDS`; returns the best
/// of three timings at that scale, and the scale.
fn grow(
    ctx: &GpuContext,
    mut record: impl FnMut(u32, &mut wgpu::CommandEncoder),
) -> Result<(f64, u32)> {
    let run = |scale: u32, record: &mut dyn FnMut(u32, &mut wgpu::CommandEncoder)| -> Result<f64> {
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("ceiling"),
            });
        record(scale, &mut enc);
        let t = Instant::now();
        ctx.queue.submit([enc.finish()]);
        ctx.wait()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let mut scale = 1u32;
    run(scale, &mut record)?; // warm-up: pipeline and memory first use
    loop {
        let t = run(scale, &mut record)?;
        if t >= MIN_SECONDS || scale >= 1 << 16 {
            let best = (0..3)
                .map(|_| run(scale, &mut record))
                .collect::<Result<Vec<f64>>>()?;
            return Ok((best.into_iter().fold(t, f64::min), scale));
        }
        scale *= 2;
    }
}

pub fn measure(ctx: &GpuContext) -> Result<Ceilings> {
    let dev = &ctx.device;
    // Bandwidth: copies between two buffers of up to 256 MiB.
    let size = (256u64 << 20).min(ctx.limits.max_buffer_size / 2) & !255;
    let make = |label, usage| {
        dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let src = make(
        "ceiling-src",
        wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    );
    let dst = make("ceiling-dst", wgpu::BufferUsages::COPY_DST);
    let (t_copy, copies) = grow(ctx, |scale, enc| {
        for _ in 0..scale {
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, size);
        }
    })?;
    drop((src, dst));

    // FLOP/s: the FMA chain kernel.
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("ceiling.wgsl"),
        source: wgpu::ShaderSource::Wgsl(include_str!("../../../shaders/ceiling.wgsl").into()),
    });
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("fma_peak"),
        layout: None,
        module: &module,
        entry_point: Some("fma_peak"),
        compilation_options: Default::default(),
        cache: None,
    });
    let groups_x = 1024u32;
    let sink = dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("ceiling-sink"),
        size: groups_x as u64 * 256 * 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("ceiling"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: sink.as_entire_binding(),
        }],
    });
    let (t_fma, rows) = grow(ctx, |scale, enc| {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("fma"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        // Rows beyond the sink repeat the work; their writes wrap around.
        pass.dispatch_workgroups(groups_x, scale, 1);
    })?;
    let invocations = groups_x as f64 * 256.0 * rows as f64;
    Ok(Ceilings {
        bytes_per_second: 2.0 * size as f64 * copies as f64 / t_copy,
        flops_per_second: FLOPS_PER_INVOCATION * invocations / t_fma,
        method: format!(
            "{copies}× copy_buffer_to_buffer of {} MiB; FMA chains on {} invocations; wall clock per submission",
            size >> 20,
            invocations as u64
        ),
    })
}
