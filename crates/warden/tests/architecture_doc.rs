//! docs/ARCHITECTURE.md stays true: every crate it names exists, and every crate exists in it.

use std::path::Path;

#[test]
fn the_code_map_names_exactly_the_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md"))
        .expect("reading the architecture doc");
    let mut on_disk: Vec<String> = std::fs::read_dir(root.join("crates"))
        .expect("listing crates/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    for name in &on_disk {
        assert!(
            doc.contains(&format!("`crates/{name}`")),
            "docs/ARCHITECTURE.md does not describe crates/{name}"
        );
    }
    for mention in doc.split("`crates/").skip(1) {
        let name = mention.split(['`', '/']).next().unwrap_or_default();
        assert!(
            on_disk.iter().any(|c| c == name),
            "docs/ARCHITECTURE.md names crates/{name}, which does not exist"
        );
    }
}
