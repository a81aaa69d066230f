//! The photo set in `assets/photos/` stays loadable, small and documented.

use std::path::Path;

#[test]
fn every_photo_loads_and_is_listed_with_its_licence() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/photos");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "png") {
            continue;
        }
        let img = spinr::inr::image::load(&path, None).unwrap();
        assert!(img.height.max(img.width) <= 512, "{}", path.display());
        let name = path.file_name().unwrap().to_string_lossy();
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}`")))
            .unwrap_or_else(|| panic!("{name} is not listed in assets/photos/README.md"));
        assert!(
            row.contains("CC0") || row.contains("public domain"),
            "{row}"
        );
        assert!(
            row.contains(&format!("{}×{}", img.width, img.height)),
            "{row}"
        );
        count += 1;
    }
    assert!(count >= 6, "only {count} photos");
}
