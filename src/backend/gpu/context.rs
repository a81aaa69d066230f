//! Adapter selection and device creation: one device per fit, created with the adapter's real
//! limits (wgpu's defaults cap bindings at 128 MiB and buffers at 256 MiB).

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// How to get an adapter when there is none (tests and the CLI print this).
pub const NO_ADAPTER_HELP: &str = "install a Vulkan driver (on Debian/Ubuntu `apt-get install \
mesa-vulkan-drivers` gives the lavapipe software adapter), or use --backend cpu";

/// A device and its queue, shared by the backends of one process.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    pub(crate) features: wgpu::Features,
    /// Validation and out-of-memory errors raised outside an error scope, drained after each
    /// submission so that a broken dispatch becomes an `Err`, never a silent wrong answer.
    errors: Arc<Mutex<Vec<String>>>,
    /// Device checks left before a simulated device loss (`usize::MAX`: never); a test aid
    /// for the recovery of a fit whose GPU fails (`GpuOptions::fail_after_checks`).
    fail_after: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish()
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::all();
    wgpu::Instance::new(desc)
}

fn is_hardware(info: &wgpu::AdapterInfo) -> bool {
    matches!(
        info.device_type,
        wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu
    )
}

/// Preference order: discrete, integrated, virtual, other, CPU; Vulkan/Metal/DX12 before GL.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (ty, backend)
}

/// Whether the adapter can run spinr's kernels at all (compute shaders, storage buffers).
fn usable(adapter: &wgpu::Adapter) -> bool {
    let down = adapter.get_downlevel_capabilities();
    let limits = adapter.limits();
    down.flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        && limits.max_storage_buffers_per_shader_stage >= 5
        && limits.max_compute_invocations_per_workgroup >= 256
        && limits.max_compute_workgroup_size_x >= 256
        && limits.max_compute_workgroup_storage_size >= WORKGROUP_MEMORY_LIMIT
}

/// Workgroup memory the largest kernel may use, and an adapter must offer: 32 KiB, what D3D12
/// and Metal allow (`tests/shaders_validate.rs` holds every entry point to it).
pub const WORKGROUP_MEMORY_LIMIT: u32 = 32768;

impl GpuContext {
    /// Waits for the submitted work, then maps the first `bytes` of the `MAP_READ` buffer and
    /// copies them out.
    pub(crate) fn map_read(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let slice = buffer.slice(0..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback was never completed".into()))?
            .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("readback mapping failed: {e}")))?;
            view.to_vec()
        };
        buffer.unmap();
        Ok(out)
    }

    /// Picks an adapter and creates a device with its real limits.
    ///
    /// `adapter_filter`: case-insensitive substring of the adapter name. `prefer_hardware` (the
    /// `auto` backend): take only a discrete or integrated GPU, never a CPU/software adapter.
    pub fn new(adapter_filter: Option<&str>, prefer_hardware: bool) -> Result<Arc<GpuContext>> {
        let instance = instance();
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
            })
            .collect();
        let mut candidates: Vec<wgpu::Adapter> = adapters
            .into_iter()
            .filter(|a| {
                let info = a.get_info();
                let name_ok = adapter_filter
                    .is_none_or(|f| info.name.to_lowercase().contains(&f.to_lowercase()));
                name_ok && (!prefer_hardware || is_hardware(&info)) && usable(a)
            })
            .collect();
        candidates.sort_by_key(|a| rank(&a.get_info()));
        let Some(adapter) = candidates.into_iter().next() else {
            let what = match (adapter_filter, prefer_hardware) {
                (Some(f), _) => format!("no usable adapter matches \"{f}\""),
                (None, true) => "no hardware GPU found".to_string(),
                (None, false) => "no usable GPU adapter found".to_string(),
            };
            let seen = if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join("; ")
            };
            return Err(Error::NoAdapter(format!(
                "{what} (adapters seen: {seen}); {NO_ADAPTER_HELP}"
            )));
        };
        Self::from_adapter(adapter)
    }

    fn from_adapter(adapter: wgpu::Adapter) -> Result<Arc<GpuContext>> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        // The kernels need no optional feature. Timestamp queries, where the adapter has
        // them, let `spinr bench` time each dispatch on the GPU itself.
        let mut features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        // Subgroup operations speed up the gate-mask kernels where warps are 32 wide (the
        // kernels assume it; other widths use the workgroup-memory fallback).
        if adapter.features().contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == 32
            && info.subgroup_max_size == 32
        {
            features |= wgpu::Features::SUBGROUP;
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("spinr"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Gpu(format!("cannot create a device on {}: {e}", info.name)))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        // A lost device (driver reset, out of memory, a GPU removed) surfaces as an error at
        // the next check, which the fit reports after saving what its checkpoint holds.
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                if let Ok(mut v) = sink.lock() {
                    v.push(format!("the GPU device was lost ({reason:?}): {msg}"));
                }
            }
        });
        Ok(Arc::new(GpuContext {
            device,
            queue,
            info,
            limits,
            features,
            errors,
            fail_after: std::sync::atomic::AtomicUsize::new(usize::MAX),
        }))
    }

    pub fn adapter_name(&self) -> String {
        self.info.name.clone()
    }

    /// A CPU (software) adapter such as lavapipe or WARP.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Whether the kernels may use 32-wide subgroup operations.
    pub fn subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    /// Features enabled on the device (only portable ones are required).
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Simulates a lost device after `checks` more device checks (a test aid).
    pub fn fail_after(&self, checks: usize) {
        self.fail_after
            .store(checks, std::sync::atomic::Ordering::SeqCst);
    }

    /// The first uncaptured device error since the last call, as an `Err`.
    pub(crate) fn take_error(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let left = self.fail_after.load(Ordering::SeqCst);
        if left != usize::MAX {
            if left == 0 {
                return Err(Error::Gpu(
                    "the GPU device was lost (simulated: SPINR_GPU_FAIL_AFTER)".into(),
                ));
            }
            self.fail_after.store(left - 1, Ordering::SeqCst);
        }
        let mut v = self
            .errors
            .lock()
            .map_err(|_| Error::Gpu("error log poisoned".into()))?;
        if v.is_empty() {
            Ok(())
        } else {
            let all = v.join("; ");
            v.clear();
            Err(Error::Gpu(all))
        }
    }

    /// Blocks until the queue is idle, then reports any device error.
    pub(crate) fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("device poll failed: {e}")))?;
        self.take_error()
    }
}

/// One adapter as `spinr devices` reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub vendor: u32,
    pub device: u32,
    pub device_type: String,
    pub backend: String,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub shader_f32_atomic: bool,
    pub timestamp_query: bool,
    pub subgroups: bool,
}

/// Every adapter wgpu sees, best first.
pub fn list_adapters() -> Vec<AdapterReport> {
    let instance = instance();
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| rank(&a.get_info()));
    adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            let l = a.limits();
            let f = a.features();
            AdapterReport {
                name: i.name.clone(),
                vendor: i.vendor,
                device: i.device,
                device_type: format!("{:?}", i.device_type),
                backend: i.backend.to_string(),
                driver: i.driver.clone(),
                driver_info: i.driver_info.clone(),
                max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
                max_buffer_size: l.max_buffer_size,
                max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
                subgroup_min_size: i.subgroup_min_size,
                subgroup_max_size: i.subgroup_max_size,
                shader_f32_atomic: f.contains(wgpu::Features::SHADER_FLOAT32_ATOMIC),
                timestamp_query: f.contains(wgpu::Features::TIMESTAMP_QUERY),
                subgroups: f.contains(wgpu::Features::SUBGROUP),
            }
        })
        .collect()
}
