// The quickstart's samples are built into the binary (`include_dir!` in src/quickstart.rs); a
// proc macro cannot tell cargo which files it read, so this does: recompile when they change.
fn main() {
    println!("cargo:rerun-if-changed=../tests/data/corpus");
}
