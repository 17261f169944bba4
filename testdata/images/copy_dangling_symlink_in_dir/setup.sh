# run by tests/engine_golden_images.rs inside the context copy
ln -s does-not-exist dir/dangling
