# run by tests/engine_golden_images.rs inside the context copy
ln dir/a dir/b
