# run by tests/engine_golden_images.rs inside the context copy
chmod 755 dir/exe
