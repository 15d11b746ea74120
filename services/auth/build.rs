// `sqlx::migrate!` embeds the files of migrations/ with include_str!, which tracks edits but not
// files added or removed: rebuild when the directory changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
