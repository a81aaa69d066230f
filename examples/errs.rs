use spinr::backend::BackendChoice;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let m = spinr::model::load(std::path::Path::new(&a[1])).unwrap();
    let img = spinr::inr::image::load(std::path::Path::new(&a[2]), Some(10)).unwrap();
    let r = m
        .render(BackendChoice::Cpu, None, m.height, m.width)
        .unwrap();
    let mut e: Vec<(f32, usize, f32)> = r
        .data
        .iter()
        .zip(&img.data)
        .enumerate()
        .map(|(i, (p, y))| ((p - y).abs(), i, *y))
        .collect();
    e.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    println!("{:?}", &e[..8]);
    let mut by_neuron = std::collections::BTreeMap::new();
    for (&i, &v) in m.w.indices.iter().zip(&m.w.values) {
        let e = by_neuron
            .entry(i as usize / m.spec.features)
            .or_insert((0, 0f32));
        e.0 += 1;
        e.1 = e.1.max(v.abs());
    }
    println!("{by_neuron:?}");
}
