# run by tests/engine_golden_images.rs inside the context copy
chmod 600 foo
chmod 700 bar
