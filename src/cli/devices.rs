//! `spinr devices`: every adapter wgpu sees and the limits the kernels care about.

use crate::backend::gpu::{list_adapters, NO_ADAPTER_HELP};
use clap::Args;

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Print a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

pub fn run(a: DevicesArgs) -> anyhow::Result<()> {
    let adapters = list_adapters();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&adapters)?);
    } else if adapters.is_empty() {
        println!("no GPU adapters found");
    } else {
        for (i, d) in adapters.iter().enumerate() {
            println!("[{i}] {} ({}, {})", d.name, d.device_type, d.backend);
            println!(
                "    vendor 0x{:04x} device 0x{:04x}  driver {} {}",
                d.vendor, d.device, d.driver, d.driver_info
            );
            println!(
                "    max storage binding {}, max buffer {}, workgroup storage {} KiB, {} invocations/workgroup",
                mib(d.max_storage_buffer_binding_size),
                mib(d.max_buffer_size),
                d.max_compute_workgroup_storage_size >> 10,
                d.max_compute_invocations_per_workgroup
            );
            println!(
                "    subgroups {} (size {}–{}), f32 atomics {}, timestamp queries {}",
                yes(d.subgroups),
                d.subgroup_min_size,
                d.subgroup_max_size,
                yes(d.shader_f32_atomic),
                yes(d.timestamp_query)
            );
        }
    }
    if adapters.is_empty() {
        eprintln!("spinr: {NO_ADAPTER_HELP}");
    }
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
