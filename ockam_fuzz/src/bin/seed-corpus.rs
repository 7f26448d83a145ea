//! Writes the seed corpus: `fuzz/corpus/<target>/seed-<n>`, valid inputs
//! of every fuzz target (`ockam_fuzz::seeds`). Run after changing a wire
//! format: `cargo run -p ockam-rs-fuzz --bin seed-corpus`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, inputs) in ockam_fuzz::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (n, input) in inputs.iter().enumerate() {
            let path = dir.join(format!("seed-{n}"));
            std::fs::write(&path, input)?;
            println!("{} ({} bytes)", path.display(), input.len());
        }
    }
    Ok(())
}
