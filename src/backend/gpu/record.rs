//! Command recording and submission: a trait call records its dispatches (each with its own
//! dynamic `Op` block), submits them at once and reads back what it asked for.

use super::buffers::{Buffers, OPS_PER_SUBMIT};
use super::context::GpuContext;
use super::interface::Op;
use super::kernels::{Kernels, K, READBACKS};
use crate::error::{Error, Result};

/// The dispatches of one trait call, in order.
#[derive(Default)]
pub(crate) struct Rec {
    pub(crate) jobs: Vec<(K, Op, [u32; 3])>,
}

impl Rec {
    pub fn push(&mut self, k: K, op: Op, grid: [u32; 3]) {
        self.jobs.push((k, op, grid));
    }
}

/// A readback request: `bytes` from `buffer` at byte `offset`.
pub(crate) struct Read<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub bytes: u64,
}

/// Submits the recorded dispatches (split into several submissions only when a call has more
/// than `OPS_PER_SUBMIT` of them), then copies `reads` into the staging buffer and maps it.
pub(crate) fn submit(
    ctx: &GpuContext,
    kernels: &Kernels,
    bufs: &Buffers,
    rec: Rec,
    reads: &[Read<'_>],
) -> Result<Vec<u8>> {
    let stride = bufs.op_stride as usize;
    if let Some(prof) = &kernels.profile {
        // One submission per dispatch, timed to completion.
        for (k, op, grid) in rec.jobs {
            let mut one = Rec::default();
            one.push(k, op, grid);
            ctx.wait()?;
            let t = std::time::Instant::now();
            submit_chunks(ctx, kernels, bufs, &one.jobs, &[], stride)?;
            ctx.wait()?;
            let mut p = prof
                .lock()
                .map_err(|_| Error::Gpu("profile poisoned".into()))?;
            p[k as usize].0 += 1;
            p[k as usize].1 += t.elapsed().as_secs_f64();
        }
        let t = std::time::Instant::now();
        let out = finish(ctx, kernels, bufs, &Rec::default().jobs, reads, stride)?;
        if !reads.is_empty() {
            let mut p = prof
                .lock()
                .map_err(|_| Error::Gpu("profile poisoned".into()))?;
            p[READBACKS].0 += 1;
            p[READBACKS].1 += t.elapsed().as_secs_f64();
        }
        return Ok(out);
    }
    finish(ctx, kernels, bufs, &rec.jobs, reads, stride)
}

fn finish(
    ctx: &GpuContext,
    kernels: &Kernels,
    bufs: &Buffers,
    jobs: &[(K, Op, [u32; 3])],
    reads: &[Read<'_>],
    stride: usize,
) -> Result<Vec<u8>> {
    let total = submit_chunks(ctx, kernels, bufs, jobs, reads, stride)?;
    if reads.is_empty() {
        return Ok(Vec::new());
    }
    ctx.map_read(&bufs.staging, total)
}

/// Encodes and submits `jobs` (in chunks of `OPS_PER_SUBMIT`), then the copies of `reads`
/// into the staging buffer; returns the bytes staged.
fn submit_chunks(
    ctx: &GpuContext,
    kernels: &Kernels,
    bufs: &Buffers,
    jobs: &[(K, Op, [u32; 3])],
    reads: &[Read<'_>],
    stride: usize,
) -> Result<u64> {
    let chunks: Vec<&[(K, Op, [u32; 3])]> = if jobs.is_empty() {
        vec![&[]]
    } else {
        jobs.chunks(OPS_PER_SUBMIT).collect()
    };
    let last = chunks.len() - 1;
    let mut total = 0u64;
    for (ci, chunk) in chunks.into_iter().enumerate() {
        let mut blob = vec![0u8; chunk.len() * stride];
        for (i, (_, op, _)) in chunk.iter().enumerate() {
            blob[i * stride..i * stride + std::mem::size_of::<Op>()]
                .copy_from_slice(bytemuck::bytes_of(op));
        }
        if !blob.is_empty() {
            ctx.queue.write_buffer(&bufs.ops, 0, &blob);
        }
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("spinr"),
            });
        if let (Some(timer), false) = (&kernels.timer, chunk.is_empty()) {
            // One pass per dispatch, its begin and end timestamped.
            for (i, (k, _, grid)) in chunk.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("spinr timed"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &timer.queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                pass.set_pipeline(&kernels.pipelines[*k as usize]);
                pass.set_bind_group(0, &kernels.bind_group, &[(i * stride) as u32]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
            let q = 2 * chunk.len() as u32;
            enc.resolve_query_set(&timer.queries, 0..q, &timer.resolve, 0);
            enc.copy_buffer_to_buffer(&timer.resolve, 0, &timer.readback, 0, q as u64 * 8);
        } else if !chunk.is_empty() {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("spinr"),
                timestamp_writes: None,
            });
            for (i, (k, _, grid)) in chunk.iter().enumerate() {
                pass.set_pipeline(&kernels.pipelines[*k as usize]);
                pass.set_bind_group(0, &kernels.bind_group, &[(i * stride) as u32]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
        }
        if ci == last {
            for r in reads {
                enc.copy_buffer_to_buffer(r.buffer, r.offset, &bufs.staging, total, r.bytes);
                total += r.bytes;
            }
        }
        ctx.queue.submit([enc.finish()]);
        ctx.take_error()?;
        if let (Some(timer), false) = (&kernels.timer, chunk.is_empty()) {
            let entries: Vec<usize> = chunk.iter().map(|(k, _, _)| *k as usize).collect();
            timer.collect(ctx, &entries)?;
        }
    }
    Ok(total)
}
