//! Lists the public API of each library crate of the workspace from its
//! rustdoc JSON (with the `public-api` crate) and compares it with the
//! baseline committed in `public-api/<library>.txt`, so that the public API
//! changes only on purpose.
//!
//! Usage (from the repository root, see `scripts/public-api.sh`, which
//! writes the rustdoc JSON first):
//!
//! ```text
//! public-api-check <doc-dir> <library>...          # compare; exit 1 on a difference
//! public-api-check --bless <doc-dir> <library>...  # write the baselines
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let bless = match args.iter().position(|a| a == "--bless") {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    };
    let Some((doc_dir, libraries)) = args.split_first() else {
        eprintln!("usage: public-api-check [--bless] <doc-dir> <library>...");
        return ExitCode::from(2);
    };
    let baseline_dir = PathBuf::from("public-api");
    let mut changed = 0;
    for library in libraries {
        let json = Path::new(doc_dir).join(format!("{library}.json"));
        // Blanket impls (`impl<T> From<T> for X`, and those of dependencies
        // such as zerocopy's) and derived impls say nothing of our own; auto
        // traits (Send, Sync, Unpin, ...) are kept: losing one breaks users.
        let api = match public_api::Builder::from_rustdoc_json(&json)
            .omit_blanket_impls(true)
            .omit_auto_derived_impls(true)
            .build()
        {
            Ok(api) => api,
            Err(e) => {
                eprintln!("{library}: cannot read {}: {e}", json.display());
                return ExitCode::from(2);
            }
        };
        let now: Vec<String> = api.items().map(|item| item.to_string()).collect();
        let baseline_file = baseline_dir.join(format!("{library}.txt"));
        if bless {
            let mut text = now.join("\n");
            text.push('\n');
            if let Err(e) = std::fs::write(&baseline_file, text) {
                eprintln!("{}: {e}", baseline_file.display());
                return ExitCode::from(2);
            }
            println!(
                "{library}: {} public items written to {}",
                now.len(),
                baseline_file.display()
            );
            continue;
        }
        let before = std::fs::read_to_string(&baseline_file).unwrap_or_default();
        let before: BTreeSet<&str> = before.lines().filter(|l| !l.is_empty()).collect();
        let now_set: BTreeSet<&str> = now.iter().map(String::as_str).collect();
        let removed: Vec<&&str> = before.difference(&now_set).collect();
        let added: Vec<&&str> = now_set.difference(&before).collect();
        if removed.is_empty() && added.is_empty() {
            println!(
                "{library}: {} public items, as in {}",
                now.len(),
                baseline_file.display()
            );
            continue;
        }
        changed += 1;
        println!(
            "{library}: the public API differs from {}:",
            baseline_file.display()
        );
        for item in removed {
            println!("  - {item}");
        }
        for item in added {
            println!("  + {item}");
        }
    }
    if changed > 0 {
        println!(
            "\n{changed} crate(s) changed their public API. If that is on purpose, run \
             `scripts/public-api.sh --bless` and commit public-api/."
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
