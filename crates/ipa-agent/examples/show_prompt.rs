//! Prints the prompt and reply schema the agent would send for a seed-format metrics text on stdin.
//! `cargo run -p ipa-agent --example show_prompt < metrics.txt`
use std::io::Read as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let snapshot = ipa_agent::seed::parse_metrics(&text, 0);
    let policy = ipa_core::Policy::default().resolve();
    let prompt = ipa_core::prompt::build(&snapshot, &policy);
    println!(
        "{}\n\n--- schema\n{}",
        prompt.to_text(),
        ipa_core::prompt::reply_schema(&snapshot, &policy)
    );
    Ok(())
}
