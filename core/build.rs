//! Rebuilds the crate when a migration is added or edited: `sqlx::migrate!`
//! embeds the files under `migrations/` at compile time, and on stable Rust
//! the compiler does not know it read them, so without this a new
//! migration would be missing from a build that reuses an old one.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
