//! `compresskv fetch <model-id|haystack>`.

use clap::Args;
use compresskv_runtime::store;

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// A known model id (e.g. google/gemma-3-270m) or `haystack` (the Paul Graham essays).
    /// Without an argument, fetches the default model and the haystack.
    pub what: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: FetchArgs) -> anyhow::Result<()> {
    let what = if args.what.is_empty() {
        vec![
            store::known_models()[0].id.to_string(),
            store::HAYSTACK_FETCH_ARG.to_string(),
        ]
    } else {
        args.what
    };
    let json = args.json;
    let mut progress = |line: &str| {
        if !json {
            eprintln!("  {line}");
        }
    };
    let mut reports = Vec::new();
    for w in &what {
        let r = if w == store::HAYSTACK_FETCH_ARG {
            store::fetch_haystack(&mut progress)?
        } else {
            store::fetch_model(w, &mut progress)?
        };
        if !json {
            println!(
                "{w}: {} ({}{})",
                r.path.display(),
                super::table::bytes(r.bytes as usize),
                if r.already_present {
                    ", already present"
                } else {
                    ", fetched and verified"
                }
            );
        }
        reports.push(serde_json::json!({
            "what": w, "path": r.path, "bytes": r.bytes, "already_present": r.already_present,
        }));
    }
    if json {
        super::print_json(&serde_json::json!({ "fetched": reports }))?;
    }
    Ok(())
}
