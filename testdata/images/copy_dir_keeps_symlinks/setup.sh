# run by tests/engine_golden_images.rs inside the context copy
ln -s a dir/rel
ln -s /abs/target dir/abs
