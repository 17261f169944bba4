# run by tests/engine_golden_images.rs inside the context copy
tar -cf empty.tar -T /dev/null
