//! scratch
#[path = "archive.rs"]
#[allow(dead_code)]
mod archive_tests;
#[test]
fn keep() {
    let d = std::path::Path::new("/tmp/va2");
    let _ = std::fs::remove_dir_all(d);
    archive_tests::write_part_pub(d);
}
